"""Backward rules: how the signal passes through activations and normalization layers on the way down.

A rule changes only the backward pass; forward outputs stay bit-identical. Rules act on the
functions a model calls, not on its modules, through a ``TorchFunctionMode`` scoped to one model's
forward pass: activation modules (``inplace=True`` included), one module called several times
(ResNet's ``self.relu``) and functional calls (``F.relu``, ``F.relu6``, ``F.silu``, ``torch.sigmoid``,
``Tensor.relu_`` ...) are all covered, and no module is modified. An in-place activation runs out of
place while a rule is applied, so the autograd graph stays valid; its result is the same value.

Every activation type has a field in :class:`Rule` whose value is one of four rules. With ``grad`` the
signal coming down, ``x`` the activation's input, ``f'(x)`` its derivative and ``signal(grad)`` the
type's *signal rectifier* (see :data:`ACTIVATIONS`):

=============  ================================  ==============================================
value          backward of the activation        for a ReLU
=============  ================================  ==============================================
``deconvnet``  ``signal(grad)``                  ``relu(grad)`` (the paper's rectification)
``guided``     ``signal(grad) * f'(x)``          ``relu(grad) * (x > 0)``
``gradient``   ``grad * f'(x)`` (plain autograd)  ``grad * (x > 0)``
``pass``       ``grad`` (identity)               ``grad``
=============  ================================  ==============================================

The rectifier family follows the paper by definition: ReLU6 rectifies like a ReLU, a leaky rectifier
(LeakyReLU, PReLU, RReLU) rectifies the signal with its own negative slope. For smooth activations
(ELU, SiLU, GELU, Mish, ...) the paper has no rule; the default rectifies the signal as at a ReLU,
and :meth:`Rule.but` changes it per type (``RULES["deconvnet"].but(silu="gradient")``). A Sigmoid or
Hardsigmoid whose output multiplies a larger tensor, directly or after a reshape, ``expand_as`` or
``interpolate`` (a squeeze-and-excitation, ECA or attention gate) is, under
``gate="fixed"``, a fixed per-channel scale computed on the way up, like a switch: the signal is
scaled by it and nothing flows into the branch that computed it. A user's own activation module
(a leaf module defined outside torch, with at most scalar parameters, that returns a new tensor of its
input's shape and is not affine on it)
has no rule: it gets its gradient, and is reported by name. :func:`apply_rule` records which rule
each activation type got (``seen=``), and :func:`choice_note` says in one line which of them are a
choice rather than the paper's rule.

Contrast normalization (local response normalization) has no counterpart in the paper's deconvnet
(Fig. 1), so it is passed through on the way down. A BatchNorm layer in eval mode is a per-channel
affine map, i.e. a 1x1 convolution: filtering with its transposed weights is its gradient, so
``deconvnet`` applies it as the deconvnet applies every other filter. Both choices can be changed with
``Rule(..., lrn=..., batchnorm=...)``.
"""
from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import KW_ONLY, dataclass, fields, replace
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from introspect.errors import IntrospectError

#: The four values an activation field of a :class:`Rule` takes.
KINDS = ("deconvnet", "guided", "gradient", "pass")


class Activation(NamedTuple):
    """One activation type: its name as torch spells it, its family and its signal rectifier.

    ``family`` is ``"rectifier"`` (the paper's rule by definition: ReLU, ReLU6, the leaky ones) or
    ``"smooth"`` (no rule in the paper: the ``deconvnet`` value is a documented choice); ``signal``
    describes the signal rectifier of the ``deconvnet`` and ``guided`` values; ``why`` is the reason
    in one line (the README's rules table is made of these rows).
    """

    name: str
    family: str
    signal: str
    why: str


#: Every activation type with a rule, keyed by its :class:`Rule` field.
ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation("ReLU", "rectifier", "relu(grad)", "the paper's rule: the reconstruction is rectified"),
    "relu6": Activation("ReLU6", "rectifier", "relu(grad)",
                        "a ReLU with a cap: it rectifies like a ReLU; the cap is a forward saturation"),
    "leaky_relu": Activation("LeakyReLU", "rectifier", "leaky_relu(grad, slope)",
                             "a leaky rectifier rectifies the reconstruction with its own negative slope"),
    "prelu": Activation("PReLU", "rectifier", "prelu(grad, weight)",
                        "a leaky rectifier with a learned slope per channel: rectified with that slope"),
    "rrelu": Activation("RReLU", "rectifier", "leaky_relu(grad, (lower + upper) / 2)",
                        "a leaky rectifier whose slope in eval mode is the mean of its range"),
    "hardtanh": Activation("Hardtanh", "smooth", "relu(grad)",
                           "a clipped identity (Hardtanh(0, 6) is a ReLU6): rectified like a ReLU"),
    "elu": Activation("ELU", "smooth", "relu(grad)", "identity above 0, saturating below: rectified like a ReLU"),
    "celu": Activation("CELU", "smooth", "relu(grad)", "identity above 0, saturating below: rectified like a ReLU"),
    "selu": Activation("SELU", "smooth", "relu(grad)",
                       "a scaled ELU: rectified like a ReLU (a constant scale does not change a projection's look)"),
    "silu": Activation("SiLU", "smooth", "relu(grad)", "x * sigmoid(x), a smooth ReLU: rectified like a ReLU"),
    "gelu": Activation("GELU", "smooth", "relu(grad)",
                       "x * Phi(x) (exact or tanh approximation), a smooth ReLU: rectified like a ReLU"),
    "hardswish": Activation("Hardswish", "smooth", "relu(grad)",
                            "x * relu6(x + 3) / 6, a piecewise smooth ReLU: rectified like a ReLU"),
    "mish": Activation("Mish", "smooth", "relu(grad)", "x * tanh(softplus(x)), a smooth ReLU: rectified like a ReLU"),
    "hard_mish": Activation("HardMish", "smooth", "relu(grad)", "a piecewise Mish (timm): rectified like a ReLU"),
    "softplus": Activation("Softplus", "smooth", "relu(grad)", "a smooth ReLU: rectified like a ReLU"),
    "sigmoid": Activation("Sigmoid", "smooth", "relu(grad)",
                          "as an activation, monotone and positive: rectified like a ReLU (as a gate: see gate)"),
    "hardsigmoid": Activation("Hardsigmoid", "smooth", "relu(grad)",
                              "as an activation, monotone: rectified like a ReLU (as a gate: see gate)"),
    "tanh": Activation("Tanh", "smooth", "relu(grad)", "monotone: rectified like a ReLU"),
}

_F: Any = F
#: Activation functions torch has that get no rule: their gradient is used, and they are reported.
NO_RULE_FUNCTIONS = {F.softsign: "Softsign", F.logsigmoid: "LogSigmoid", F.tanhshrink: "Tanhshrink",
                     F.softshrink: "Softshrink", F.hardshrink: "Hardshrink", F.threshold: "Threshold",
                     _F.threshold_: "Threshold", F.glu: "GLU"}


@dataclass(frozen=True)
class Rule:
    """A backward rule: one of :data:`KINDS` per activation type, and the normalization rules.

    ``relu`` is the base value: activation fields left ``None`` take it (``Rule("mine", relu="guided")``
    is guided backpropagation at every activation). ``lrn`` and ``batchnorm`` are ``pass`` (identity)
    or ``gradient``; ``gate`` is ``fixed`` (a squeeze-and-excitation gate scales the signal and
    receives none) or ``through`` (the gate's own activation rule, the signal flows into its branch).
    """

    name: str
    relu: str
    _: KW_ONLY  # the other fields by name only: Rule("mine", "guided", silu="gradient")
    relu6: str | None = None
    leaky_relu: str | None = None
    prelu: str | None = None
    rrelu: str | None = None
    hardtanh: str | None = None
    elu: str | None = None
    celu: str | None = None
    selu: str | None = None
    silu: str | None = None
    gelu: str | None = None
    hardswish: str | None = None
    mish: str | None = None
    hard_mish: str | None = None
    softplus: str | None = None
    sigmoid: str | None = None
    hardsigmoid: str | None = None
    tanh: str | None = None
    lrn: str = "pass"
    batchnorm: str = "gradient"
    gate: str | None = None

    def __post_init__(self):
        for key, act in ACTIVATIONS.items():
            value = getattr(self, key)
            if value is None:
                object.__setattr__(self, key, self.relu)
            elif value not in KINDS:
                raise IntrospectError(
                    f"unknown rule {value!r} for {act.name}; use one of {', '.join(KINDS)}")
        if self.gate is None:
            object.__setattr__(self, "gate", "fixed" if self.relu in ("deconvnet", "guided") else "through")
        for field_name in ("lrn", "batchnorm"):
            if getattr(self, field_name) not in ("pass", "gradient"):
                raise IntrospectError(
                    f"{field_name} rule must be 'pass' or 'gradient', not {getattr(self, field_name)!r}"
                )
        if self.gate not in ("fixed", "through"):
            raise IntrospectError(f"gate rule must be 'fixed' or 'through', not {self.gate!r}")

    def but(self, **changes: str) -> Rule:
        """A copy with some fields changed, e.g. ``RULES['deconvnet'].but(lrn='gradient')`` or, per
        activation type, ``RULES['deconvnet'].but(silu='gradient', gelu='pass')``."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise IntrospectError(
                f"unknown rule field {unknown[0]!r}; use one of {', '.join(ACTIVATIONS)}, lrn, batchnorm, gate")
        values: dict[str, Any] = dict(changes)
        return replace(self, **values)

    def of(self, key: str) -> str:
        """The value for activation type ``key`` (a key of :data:`ACTIVATIONS`)."""
        return getattr(self, key)

    def is_choice(self, key: str) -> bool:
        """Whether this rule's treatment of ``key`` is a choice rather than the paper's deconvnet rule:
        a smooth activation under ``deconvnet`` or ``guided``."""
        return ACTIVATIONS[key].family != "rectifier" and self.of(key) in ("deconvnet", "guided")


RULES: dict[str, Rule] = {
    "deconvnet": Rule("deconvnet", relu="deconvnet"),
    "guided": Rule("guided", relu="guided"),
    "gradient": Rule("gradient", relu="gradient", lrn="gradient", batchnorm="gradient"),
    "pass": Rule("pass", relu="pass", lrn="pass", batchnorm="pass"),
}


def parse_activation_rules(base: str | Rule, items: Iterable[str]) -> Rule:
    """``base`` with ``TYPE=RULE`` items applied (the CLI's ``--activation-rule silu=gradient``).

    ``TYPE`` is a field of :class:`Rule` (``silu``) or a torch class name (``SiLU``), case-insensitive.
    """
    rule = resolve_rule(base)
    by_name = {k: k for k in ACTIVATIONS} | {a.name.lower(): k for k, a in ACTIVATIONS.items()}
    by_name |= {"gate": "gate", "lrn": "lrn", "batchnorm": "batchnorm"}
    changes = {}
    for item in items or ():
        name, sep, value = str(item).partition("=")
        key = by_name.get(name.strip().lower().replace("-", "_"))
        if not sep or key is None:
            raise IntrospectError(
                f"cannot read activation rule {item!r}; use TYPE=RULE with TYPE one of "
                f"{', '.join(ACTIVATIONS)} and RULE one of {', '.join(KINDS)}, e.g. silu=gradient")
        changes[key] = value.strip()
    return rule.but(**changes) if changes else rule


def resolve_rule(rule: str | Rule) -> Rule:
    """A :class:`Rule` from a name of :data:`RULES` or a rule itself."""
    if isinstance(rule, Rule):
        return rule
    if rule not in RULES:
        raise IntrospectError(f"unknown rule {rule!r}; use one of {', '.join(RULES)}")
    return RULES[rule]


# --------------------------------------------------------------------------------------------------
# autograd functions (vmap-friendly: batched backward passes with is_grads_batched=True work)
# --------------------------------------------------------------------------------------------------
class _Replace(torch.autograd.Function):
    """Forward: ``fn(x)``; backward: ``signal(grad)`` to ``x`` (the activation's own derivative is
    not used)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, fn, signal):
        return fn(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.signal = inputs[2]

    @staticmethod
    def backward(ctx, grad):
        return ctx.signal(grad), None, None


class _Signal(torch.autograd.Function):
    """Forward: a copy of ``y``; backward: ``signal(grad)`` (autograd then applies ``f'(x)``)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(y, signal):
        return y.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.signal = inputs[1]

    @staticmethod
    def backward(ctx, grad):
        return ctx.signal(grad), None


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


def _identity(grad):
    return grad


def _leaky(slope: float) -> Callable:
    return lambda grad: F.leaky_relu(grad, slope)


def _per_channel(weight: torch.Tensor, like: torch.Tensor) -> Callable:
    """``prelu(grad, weight)``: ``weight`` is one slope or one per channel (dim 1)."""
    w = weight.detach().to(like.dtype)
    if w.numel() > 1 and like.dim() >= 2:
        w = w.reshape(-1, *([1] * (like.dim() - 2)))
    else:
        w = w.reshape(())
    return lambda grad: torch.where(grad >= 0, grad, grad * w)


def ruled(
    kind: str, x: torch.Tensor, y: torch.Tensor | None, fn: Callable | None, signal: Callable
) -> torch.Tensor:
    """The output of an activation ``y = fn(x)`` with backward rule ``kind`` (one of :data:`KINDS`).

    ``y`` is the output already computed with autograd (``None``: compute ``fn(x)`` here); ``signal``
    is the type's signal rectifier.
    """
    if kind == "deconvnet":
        return _Replace.apply(x, (lambda _: y.detach().clone()) if y is not None else fn, signal)
    if kind == "pass":
        return _Replace.apply(x, (lambda _: y.detach().clone()) if y is not None else fn, _identity)
    if y is None:
        if fn is None:
            raise TypeError("ruled() needs fn when y is None")
        y = fn(x)
    return _Signal.apply(y, signal) if kind == "guided" else y


# --------------------------------------------------------------------------------------------------
# which call is which activation
# --------------------------------------------------------------------------------------------------
def _arg(args: Sequence[Any], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


def _relu_signal(args, kwargs):
    return torch.relu


def _leaky_signal(args, kwargs):
    return _leaky(float(_arg(args, kwargs, 1, "negative_slope", 0.01)))


def _rrelu_signal(args, kwargs):
    lower = float(_arg(args, kwargs, 1, "lower", 1.0 / 8))
    upper = float(_arg(args, kwargs, 2, "upper", 1.0 / 3))
    return _leaky((lower + upper) / 2)


def _prelu_signal(args, kwargs):
    return _per_channel(_arg(args, kwargs, 1, "weight", None), args[0])


def _hardtanh_key(args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    low = float(_arg(args, kwargs, 1, "min_val", -1.0))
    high = float(_arg(args, kwargs, 2, "max_val", 1.0))
    return "relu6" if (low, high) == (0.0, 6.0) else "hardtanh"


_T = torch.Tensor
_FUNCTIONS: dict[Callable, str] = {}
for _key, _funcs in {
    "relu": (F.relu, F.relu_, torch.relu, torch.relu_, _T.relu, _T.relu_),
    "relu6": (F.relu6,),
    "hardtanh": (F.hardtanh, F.hardtanh_),
    "leaky_relu": (F.leaky_relu, F.leaky_relu_),
    "prelu": (F.prelu, torch.prelu),
    "rrelu": (F.rrelu, F.rrelu_, torch.rrelu, torch.rrelu_),
    "elu": (F.elu, F.elu_),
    "celu": (F.celu, F.celu_, torch.celu, torch.celu_),
    "selu": (F.selu, F.selu_, torch.selu, torch.selu_),
    "silu": (F.silu,),
    "gelu": (F.gelu,),
    "hardswish": (F.hardswish,),
    "mish": (F.mish,),
    "softplus": (F.softplus,),
    "sigmoid": (F.sigmoid, torch.sigmoid, torch.sigmoid_, _T.sigmoid, _T.sigmoid_),
    "hardsigmoid": (F.hardsigmoid,),
    "tanh": (F.tanh, torch.tanh, torch.tanh_, _T.tanh, _T.tanh_),
}.items():
    for _f in _funcs:
        _FUNCTIONS[_f] = _key
_SIGNALS = {"leaky_relu": _leaky_signal, "rrelu": _rrelu_signal, "prelu": _prelu_signal}
_GATES = ("sigmoid", "hardsigmoid")
_MUL_CALLS = {torch.mul, _T.mul, _T.mul_, _T.__mul__, _T.__rmul__, _T.__imul__}
_SHAPE_CALLS = {_T.view, _T.reshape, torch.reshape, _T.expand, _T.expand_as, _T.unsqueeze, torch.unsqueeze,
                _T.flatten, torch.flatten, _T.permute, torch.permute, _T.contiguous, F.interpolate}
_LRN_CALLS = {F.local_response_norm}
_BN_CALLS = {F.batch_norm, torch.batch_norm}

#: Activation modules whose forward is composite (several calls): ruled as a whole, by class.
COMPOSITE_MODULES: dict[str, str] = {
    "timm.layers.activations.Swish": "silu",
    "timm.layers.activations.Mish": "mish",
    "timm.layers.activations.HardSwish": "hardswish",
    "timm.layers.activations.HardSigmoid": "hardsigmoid",
    "timm.layers.activations.HardMish": "hard_mish",
    "timm.layers.activations.QuickGELU": "gelu",
    "timm.layers.activations_me.SwishMe": "silu",
    "timm.layers.activations_me.MishMe": "mish",
    "timm.layers.activations_me.HardSwishMe": "hardswish",
    "timm.layers.activations_me.HardSigmoidMe": "hardsigmoid",
    "timm.layers.activations_me.HardMishMe": "hard_mish",
}
#: Activation modules defined outside torch whose forward is one call that has a rule (not a user's
#: own activation: the function's rule applies).
WRAPPER_MODULES = {"timm.layers.activations.GELU", "timm.layers.activations.GELUTanh",
                   "timm.layers.activations.Sigmoid", "timm.layers.activations.Tanh"}


#: torch activation modules -> their type (a key of :data:`ACTIVATIONS`).
MODULE_TYPES: dict[type, str] = {
    nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Hardtanh: "hardtanh", nn.LeakyReLU: "leaky_relu", nn.PReLU: "prelu",
    nn.RReLU: "rrelu", nn.ELU: "elu", nn.CELU: "celu", nn.SELU: "selu", nn.SiLU: "silu", nn.GELU: "gelu",
    nn.Hardswish: "hardswish", nn.Mish: "mish", nn.Softplus: "softplus", nn.Sigmoid: "sigmoid",
    nn.Hardsigmoid: "hardsigmoid", nn.Tanh: "tanh",
}


def activation_type(module: nn.Module) -> str | None:
    """The activation type (a key of :data:`ACTIVATIONS`) of a torch activation module, else None.
    ``Hardtanh(0, 6)`` is a ReLU6."""
    key = MODULE_TYPES.get(type(module))
    m: Any = module
    if key == "hardtanh" and (float(m.min_val), float(m.max_val)) == (0.0, 6.0):
        return "relu6"
    return key


def signal_slope(module: nn.Module) -> float | torch.Tensor | None:
    """The negative slope of a module's signal rectifier under ``deconvnet``: ``None`` for
    ``relu(grad)``, a number for LeakyReLU and RReLU (the mean of its range), the per-channel
    weight for PReLU."""
    key = activation_type(module)
    m: Any = module
    if key == "leaky_relu":
        return float(m.negative_slope)
    if key == "rrelu":
        return (float(m.lower) + float(m.upper)) / 2
    if key == "prelu":
        return m.weight.detach()
    return None


def _qualname(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def _is_own_activation(module: nn.Module) -> bool:
    """A candidate for "a user's own activation": a leaf module defined outside torch, not derived
    from a torch layer, with at most scalar parameters (reported only if it returns a new tensor of
    its input's shape)."""
    cls = type(module)
    if next(module.children(), None) is not None or cls.__module__.startswith("torch."):
        return False
    if _qualname(module) in WRAPPER_MODULES:
        return False
    if any(base.__module__.startswith("torch.") and base is not nn.Module for base in cls.__mro__[1:]
           if issubclass(base, nn.Module)):
        return False
    return all(p.numel() <= 1 for p in module.parameters(recurse=False))


class _RuleMode(TorchFunctionMode):
    """Replaces activation and normalization calls while ``depth`` (forward passes of the scoped
    model in flight) is positive and no module that is ruled as a whole is running."""

    def __init__(self, rule: Rule, seen: dict | None):
        super().__init__()
        self.rule = rule
        self.depth = 0
        self.inside = 0  # modules ruled as a whole (or left to their gradient) running now
        self.seen = seen if seen is not None else {}
        self._gates: dict[int, tuple] = {}
        self._gate_calls: dict[str, tuple[int, str]] = {}
        self._gate_uses: dict[str, int] = {}
        self.affine: dict[int, bool] = {}  # own modules found affine (not activations), by id

    # -- recording ---------------------------------------------------------------------------------
    def note(self, name: str, value: str) -> None:
        self.seen[name] = value

    def _tag_gate(self, key: str, out: torch.Tensor, kind: str) -> None:
        """Remember a Sigmoid/Hardsigmoid output: if it multiplies a larger tensor, it is a gate."""
        self._tag(out, key, out.numel())
        name = ACTIVATIONS[key].name
        count, _ = self._gate_calls.get(name, (0, kind))
        self._gate_calls[name] = (count + 1, kind)

    def _tag(self, out: torch.Tensor, key: str, numel: int) -> None:
        ident = id(out)
        gates = self._gates

        def forget(_ref: object) -> None:
            gates.pop(ident, None)

        gates[ident] = (weakref.ref(out, forget), key, numel)

    def finish(self) -> None:
        """Record the Sigmoid/Hardsigmoid calls: as gates where they gated, as activations otherwise."""
        for name, (count, kind) in self._gate_calls.items():
            used = self._gate_uses.get(name, 0)
            if count > used:
                self.seen[name] = kind
            if used:
                self.seen[name + " gate"] = "fixed"

    def _gate_of(self, value):
        if isinstance(value, torch.Tensor):
            entry = self._gates.get(id(value))
            if entry is not None and entry[0]() is value:
                return entry
        return None

    # -- dispatch ----------------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.depth > 0 and self.inside == 0:
            key = _FUNCTIONS.get(func)
            if key is not None:
                return self.activation(key, func, args, kwargs)
            if func in _MUL_CALLS and self._gates:
                gated = self._fixed_gate(func, args, kwargs)
                if gated is not None:
                    return gated
            if func in _SHAPE_CALLS and self._gates:
                entry = self._gate_of(args[0] if args else None)
                if entry is not None:  # a gate reshaped, expanded or resized is still that gate
                    out = func(*args, **kwargs)
                    if isinstance(out, torch.Tensor):
                        self._tag(out, entry[1], entry[2])
                    return out
            if func in NO_RULE_FUNCTIONS:
                self.note(NO_RULE_FUNCTIONS[func], "gradient (no rule)")
            if func in _LRN_CALLS and self.rule.lrn == "pass":
                return _PassThrough.apply(args[0], func(*args, **kwargs))
            if func in _BN_CALLS and self.rule.batchnorm == "pass":
                return _PassThrough.apply(args[0], func(*args, **kwargs))
        return func(*args, **kwargs)

    def activation(self, key: str, func: Callable, args: Sequence[Any], kwargs: dict[str, Any]) -> torch.Tensor:
        """The output of one activation call, with the rule of its type."""
        if func in (F.hardtanh, F.hardtanh_):
            key = _hardtanh_key(args, kwargs)
        x = args[0]
        inplace = getattr(func, "__name__", "").endswith("_") or kwargs.get("inplace") is True or any(
            a is True for a in args[1:])
        rest = args[1:]

        def fn(t):
            if key == "relu":
                return torch.relu(t)  # out of place, the common case without a copy
            return func(t.clone() if inplace else t, *rest, **kwargs)

        kind = self.rule.of(key)
        gate = key in _GATES and self.rule.gate == "fixed"
        if not gate:
            self.note(ACTIVATIONS[key].name, kind)
        if kind == "gradient" and not inplace and not gate:
            return func(*args, **kwargs)
        out = ruled(kind, x, None, fn, _SIGNALS.get(key, _relu_signal)(args, kwargs))
        if gate:
            self._tag_gate(key, out, kind)
        return out

    def _fixed_gate(self, func, args, kwargs):
        """``gate * x`` with the gate a fixed scale: the gate's branch gets no signal."""
        if len(args) < 2 or not all(isinstance(a, torch.Tensor) for a in args[:2]):
            return None
        for i, j in ((0, 1), (1, 0)):
            entry = self._gate_of(args[i])
            if entry is not None and entry[2] < args[j].numel():
                name = ACTIVATIONS[entry[1]].name
                self._gate_uses[name] = self._gate_uses.get(name, 0) + 1
                new = list(args)
                new[i] = args[i].detach()
                return func(*new, **kwargs)
        return None


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
            mode.finish()


class _Whole:
    """Hooks on one module that is ruled as a whole: an activation module with a composite forward
    (rule of type ``key``), or a user's own activation module (``key`` None: its gradient)."""

    def __init__(self, mode: _RuleMode, key: str | None):
        self._mode = weakref.ref(mode)
        self.key = key
        self._inputs: list = []

    @staticmethod
    def _affine(mode: _RuleMode, module: nn.Module, x: torch.Tensor) -> bool:
        """Whether ``module`` is affine on ``x`` (``f(2x) - f(0) == 2 (f(x) - f(0))``): a scale, a
        shift or a linear transform is not an activation. Checked once per module and rule scope,
        by two more forward calls; tensors without data (meta) are not checked."""
        known = mode.affine.get(id(module))
        if known is not None:
            return known
        result = False
        if x.device.type != "meta" and x.is_floating_point():
            mode.inside += 1
            try:
                with torch.no_grad():
                    probe = x.detach()
                    zero = module.forward(torch.zeros_like(probe))  # forward: no hooks run
                    one, two = module.forward(probe.clone()) - zero, module.forward(2 * probe) - zero
                    result = bool(torch.allclose(two, 2 * one, rtol=1e-4, atol=1e-5 * float(one.abs().max()) + 1e-12))
            except (RuntimeError, ValueError, TypeError):  # cannot run on these probes: not known affine
                result = False
            finally:
                mode.inside -= 1
        mode.affine[id(module)] = result
        return result

    def enter(self, module, args):
        mode = self._mode()
        if mode is None or mode.depth == 0:
            self._inputs.append(None)
            return None
        mode.inside += 1
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        self._inputs.append(x)
        if x is not None and getattr(module, "inplace", False):
            return (x.clone(), *args[1:])  # the module works on a copy: x stays the graph's input
        return None

    def leave(self, module, args, output):
        x = self._inputs.pop() if self._inputs else None
        mode = self._mode()
        if mode is None or mode.depth == 0:
            return None
        mode.inside = max(0, mode.inside - 1)
        if x is None or not isinstance(output, torch.Tensor):
            return None
        if self.key is None:
            if output.shape == x.shape and output is not x and mode.inside == 0 and not self._affine(mode, module, x):
                mode.note(type(module).__name__, "gradient (no rule)")
            return None
        if mode.inside > 0:
            return None
        kind = mode.rule.of(self.key)
        gate = self.key in _GATES and mode.rule.gate == "fixed"
        if not gate:
            mode.note(ACTIVATIONS[self.key].name, kind)
        out = output if kind == "gradient" else ruled(kind, x, output, None, torch.relu)
        if gate:
            mode._tag_gate(self.key, out, kind)
        return out


@contextlib.contextmanager
def apply_rule(model: nn.Module, rule: str | Rule = "deconvnet", *, seen: dict | None = None) -> Iterator[Rule]:
    """Apply a backward rule to every forward pass of ``model`` inside the ``with`` block.

    Args:
        model (nn.Module): the model whose forward passes get the rule; other models run as usual.
        rule (str or Rule): ``"deconvnet"``, ``"guided"``, ``"gradient"``, ``"pass"`` or a
            :class:`Rule` (e.g. ``RULES["deconvnet"].but(silu="gradient")``).
        seen (dict | None): if given, filled during the forward passes with ``{activation type:
            rule it got}``, e.g. ``{"ReLU6": "deconvnet", "Sigmoid gate": "fixed",
            "MyAct": "gradient (no rule)"}``.

    Example:
        >>> with apply_rule(model, "deconvnet"):
        ...     x = image.requires_grad_()
        ...     model(x)[0, 3].backward()   # x.grad is the deconvnet projection of logit 3

    On exit, also after an exception, the hooks are removed and the mode is popped; the model
    carries no trace of the rule.
    """
    rule = resolve_rule(rule)
    mode = _RuleMode(rule, seen)
    depth = _Depth(mode)
    with contextlib.ExitStack() as stack:
        stack.callback(model.register_forward_pre_hook(depth.enter).remove)
        stack.callback(model.register_forward_hook(depth.leave, always_call=True).remove)
        for module in model.modules():
            if module is model:
                continue
            key = COMPOSITE_MODULES.get(_qualname(module))
            if key is None and not _is_own_activation(module):
                continue
            whole = _Whole(mode, key)
            stack.callback(module.register_forward_pre_hook(whole.enter).remove)
            stack.callback(module.register_forward_hook(whole.leave, always_call=True).remove)
        stack.enter_context(mode)
        yield rule


def choice_note(seen: dict, rule: str | Rule = "deconvnet") -> str | None:
    """One line naming the activation types in ``seen`` (from :func:`apply_rule`) whose treatment is a
    choice rather than the paper's ReLU rule, and the option that changes it; ``None`` if none is."""
    rule = resolve_rule(rule)
    by_name = {a.name: k for k, a in ACTIVATIONS.items()}
    chosen, unruled, gates = [], [], []
    for name, value in seen.items():
        if value == "gradient (no rule)":
            unruled.append(name)
        elif value == "fixed":
            gates.append(name)
        elif name in by_name and rule.is_choice(by_name[name]) and value in ("deconvnet", "guided"):
            chosen.append(name)
    parts = []
    if chosen:
        parts.append(f"{', '.join(chosen)}: the signal is rectified as at a ReLU")
    if gates:
        parts.append(f"{', '.join(gates)}: a fixed scale (no signal into the gate's branch)")
    if unruled:
        parts.append(f"{', '.join(unruled)}: no rule, their gradient is used")
    if not parts:
        return None
    hints = [f"--activation-rule {by_name[chosen[0]]}=gradient"] if chosen else []
    hints += ["--activation-rule gate=through"] if gates else []
    hint = f" (change with {' or '.join(hints)})" if hints else ""
    return f"{rule.name} rule is a choice, not the paper's ReLU rule, for {'; '.join(parts)}{hint}"


def rules_table() -> str:
    """The README's rules table (Markdown): activation x rule, with the reason for each default."""
    lines = ["| activation | deconvnet | guided | gradient | why |", "|---|---|---|---|---|"]
    for key, act in ACTIVATIONS.items():
        lines.append(f"| {act.name} (`{key}`) | `{act.signal}` | `{act.signal} * f'(x)` | `grad * f'(x)` "
                     f"| {act.why} |")
    lines.append("| Sigmoid / Hardsigmoid gate (`gate`) | fixed scale | fixed scale | `grad * f'(x)` "
                 "| a squeeze-and-excitation gate is state computed on the way up, like a switch |")
    lines.append("| your own activation module | `grad * f'(x)` | `grad * f'(x)` | `grad * f'(x)` "
                 "| no rule is known: its gradient, reported by name |")
    return "\n".join(lines)


__all__ = [
    "ACTIVATIONS",
    "COMPOSITE_MODULES",
    "KINDS",
    "RULES",
    "Activation",
    "Rule",
    "apply_rule",
    "choice_note",
    "parse_activation_rules",
    "resolve_rule",
    "ruled",
    "rules_table",
]
