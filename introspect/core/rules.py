"""Backward rules: how gradients pass through rectifiers and normalization layers.

A rule changes only the backward pass; forward outputs stay bit-identical. Rules act on the
functions a model calls, not on its modules, through a ``TorchFunctionMode`` scoped to one model's
forward pass: ``nn.ReLU`` (``inplace=True`` included), one ReLU module called several times (ResNet's
``self.relu``) and ``F.relu`` / ``torch.relu`` / ``Tensor.relu`` called functionally are all covered,
and no module is modified. An in-place rectifier runs out of place while a rule is applied, so the
autograd graph stays valid; its result is the same tensor value.

=============  ==========================================  =====================================
rule           rectifier backward                          normalization backward
=============  ==========================================  =====================================
``deconvnet``  ``relu(grad)`` (the paper's rectification)  LRN: pass-through; BatchNorm: gradient
``guided``     ``relu(grad) * (input > 0)``                LRN: pass-through; BatchNorm: gradient
``gradient``   ``grad * (input > 0)`` (plain autograd)     gradient
``pass``       ``grad`` (identity)                         pass-through
=============  ==========================================  =====================================

Contrast normalization (local response normalization) has no counterpart in the paper's deconvnet
(Fig. 1), so it is passed through on the way down. A BatchNorm layer in eval mode is a per-channel
affine map, i.e. a 1x1 convolution: filtering with its transposed weights is its gradient, so
``deconvnet`` applies it as the deconvnet applies every other filter. Both choices can be changed with
``Rule(..., lrn=..., batchnorm=...)``.
"""
from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from introspect.errors import IntrospectError


# --------------------------------------------------------------------------------------------------
# autograd functions (vmap-friendly: batched backward passes with is_grads_batched=True work)
# --------------------------------------------------------------------------------------------------
class _DeconvReLU(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return torch.relu(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return torch.relu(grad)


class _GuidedReLU(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return torch.relu(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad):
        (output,) = ctx.saved_tensors
        return torch.relu(grad) * (output > 0).to(grad.dtype)


class _PassReLU(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return torch.relu(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad


class _PassThrough(torch.autograd.Function):
    """Forward: ``output`` (computed from ``x`` by any function); backward: identity to ``x``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, output):
        return output.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad, None


_RELU_FUNCTIONS = {
    "deconvnet": _DeconvReLU.apply,
    "guided": _GuidedReLU.apply,
    "pass": _PassReLU.apply,
    "gradient": None,
}


@dataclass(frozen=True)
class Rule:
    """A backward rule: ``relu`` is one of ``deconvnet``, ``guided``, ``gradient``, ``pass``;
    ``lrn`` and ``batchnorm`` are ``pass`` (identity) or ``gradient``."""

    name: str
    relu: str
    lrn: str = "pass"
    batchnorm: str = "gradient"

    def __post_init__(self):
        if self.relu not in _RELU_FUNCTIONS:
            raise IntrospectError(f"unknown rectifier rule {self.relu!r}; use one of {sorted(_RELU_FUNCTIONS)}")
        for field_name in ("lrn", "batchnorm"):
            if getattr(self, field_name) not in ("pass", "gradient"):
                raise IntrospectError(f"{field_name} rule must be 'pass' or 'gradient', not {getattr(self, field_name)!r}")

    def but(self, **changes) -> "Rule":
        """A copy with some fields changed, e.g. ``RULES['deconvnet'].but(lrn='gradient')``."""
        return replace(self, **changes)


RULES: dict[str, Rule] = {
    "deconvnet": Rule("deconvnet", relu="deconvnet"),
    "guided": Rule("guided", relu="guided"),
    "gradient": Rule("gradient", relu="gradient", lrn="gradient", batchnorm="gradient"),
    "pass": Rule("pass", relu="pass", lrn="pass", batchnorm="pass"),
}

_RELU_CALLS = {F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_, F.relu_}
_LRN_CALLS = {F.local_response_norm}
_BN_CALLS = {F.batch_norm, torch.batch_norm}


class _RuleMode(TorchFunctionMode):
    """Replaces rectifier and normalization calls while ``depth`` (forward passes of the scoped
    model in flight) is positive."""

    def __init__(self, rule: Rule):
        super().__init__()
        self.rule = rule
        self.depth = 0
        self.relu_fn = _RELU_FUNCTIONS[rule.relu]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.depth > 0:
            if func in _RELU_CALLS and self.relu_fn is not None:
                return self.relu_fn(args[0])
            if func in _RELU_CALLS and self.relu_fn is None and (
                kwargs.get("inplace") or (len(args) > 1 and args[1] is True)
                or func in (torch.relu_, torch.Tensor.relu_, F.relu_)
            ):
                return torch.relu(args[0])
            if func in _LRN_CALLS and self.rule.lrn == "pass":
                return _PassThrough.apply(args[0], func(*args, **kwargs))
            if func in _BN_CALLS and self.rule.batchnorm == "pass":
                return _PassThrough.apply(args[0], func(*args, **kwargs))
        return func(*args, **kwargs)


class _Depth:
    """Forward pre/post hooks on the root module that scope the mode to its forward pass."""

    def __init__(self, mode: _RuleMode):
        self._mode = weakref.ref(mode)

    def enter(self, module, inputs):
        mode = self._mode()
        if mode is not None:
            mode.depth += 1

    def leave(self, module, inputs, output):
        mode = self._mode()
        if mode is not None:
            mode.depth = max(0, mode.depth - 1)


@contextlib.contextmanager
def apply_rule(model: nn.Module, rule: str | Rule = "deconvnet"):
    """Apply a backward rule to every forward pass of ``model`` inside the ``with`` block.

    Args:
        model (nn.Module): the model whose forward passes get the rule; other models run as usual.
        rule (str or Rule): ``"deconvnet"``, ``"guided"``, ``"gradient"``, ``"pass"`` or a
            :class:`Rule`.

    Example:
        >>> with apply_rule(model, "deconvnet"):
        ...     x = image.requires_grad_()
        ...     model(x)[0, 3].backward()   # x.grad is the deconvnet projection of logit 3

    On exit, also after an exception, the hooks are removed and the mode is popped; the model
    carries no trace of the rule.
    """
    if isinstance(rule, str):
        if rule not in RULES:
            raise IntrospectError(f"unknown rule {rule!r}; use one of {', '.join(RULES)}")
        rule = RULES[rule]
    mode = _RuleMode(rule)
    depth = _Depth(mode)
    with contextlib.ExitStack() as stack:
        stack.callback(model.register_forward_pre_hook(depth.enter).remove)
        stack.callback(model.register_forward_hook(depth.leave, always_call=True).remove)
        stack.enter_context(mode)
        yield rule


__all__ = ["Rule", "RULES", "apply_rule"]
