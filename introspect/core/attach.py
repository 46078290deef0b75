"""``attach(model, layers)``: record the activations of named layers, then leave no trace.

Every hook is an object with a handle; the context manager owns the handles in an
:class:`contextlib.ExitStack`, so they are removed on exit, after an exception raised in the ``with``
block, and also when attaching fails half-way through ``__enter__``. Hooks reach the recorder through
a weak reference, so a forgotten recorder never keeps a model or its activations alive.
"""
from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from introspect.core.layers import StopForward, forward_until, resolve_layer


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Every module of ``model`` in eval mode (dropout off, batch-norm statistics fixed) for the
    ``with`` block; each module's own ``training`` flag is restored afterwards, also after an error.

    Example:
        >>> with eval_mode(model), torch.no_grad():
        ...     logits = model(x)
    """
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


class _RecordHook:
    """A forward hook that stores one module's output in its recorder under ``name``."""

    def __init__(self, recorder: Recorder, name: str):
        self._recorder = weakref.ref(recorder)
        self.name = name

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> None:
        recorder = self._recorder()
        if recorder is None:
            return
        value = output[0] if isinstance(output, (tuple, list)) else output
        recorder._store(self.name, value)


class Recorder:
    """Records the outputs of the named layers of ``model`` while attached.

    Args:
        model (nn.Module): any module; it is never modified beyond hooks that are removed on exit.
        layers (sequence of str or nn.Module): layer names as ``model.named_modules()`` gives them,
            aliases such as ``"conv5"`` for the bundled models, or the modules themselves.
        detach (bool): store detached tensors (default) or keep them in the autograd graph, e.g. to
            start a backward pass from a recorded activation.

    Attributes:
        activations (dict[str, Tensor]): canonical layer name -> its latest output (N x C x H x W for
            convolutional layers). A module called several times per forward keeps its last output.
        names (list[str]): canonical names in the order the layers were given.

    Example:
        >>> with attach(model, ["conv5"]) as rec:
        ...     logits = model(images)
        >>> rec["conv5"].shape
        torch.Size([8, 256, 13, 13])
    """

    def __init__(self, model: nn.Module, layers: Sequence[str | nn.Module] | str, *, detach: bool = True):
        if isinstance(layers, (str, nn.Module)):
            layers = [layers]
        self.model = model
        self.detach = detach
        resolved = [resolve_layer(model, layer) for layer in layers]
        self.names = [name for name, _ in resolved]
        self._modules = {name: module for name, module in resolved}
        self.activations: dict[str, torch.Tensor] = {}
        self._stack: contextlib.ExitStack | None = None
        self._stop_after: set[str] = set()

    # -- context manager -------------------------------------------------------------------------
    def __enter__(self) -> Recorder:
        if self._stack is not None:
            raise RuntimeError("this Recorder is already attached; create a new one to attach twice")
        with contextlib.ExitStack() as stack:
            for name, module in self._modules.items():
                handle = module.register_forward_hook(_RecordHook(self, name))
                stack.callback(handle.remove)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc_info: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def close(self) -> None:
        """Remove every hook (the same as leaving the ``with`` block)."""
        self.__exit__(None, None, None)

    # -- recording -------------------------------------------------------------------------------
    def _store(self, name: str, value: torch.Tensor) -> None:
        # a copy: an in-place operation after the layer (nn.ReLU(inplace=True)) would overwrite it
        self.activations[name] = value.detach().clone() if self.detach else value.clone()
        if self._stop_after and self._stop_after.issubset(self.activations):
            raise StopForward  # the last recorded layer has run: nothing above it needs computing

    def __getitem__(self, name: str) -> torch.Tensor:
        if name in self.activations:
            return self.activations[name]
        canonical, _ = resolve_layer(self.model, name)
        return self.activations[canonical]

    def forward(self, x: torch.Tensor, *, stop: bool = False) -> Any:
        """Run ``model(x)`` and return its output, clearing earlier activations first.

        With ``stop=True`` the forward pass ends as soon as every recorded layer has produced its
        output (layers above are not computed) and ``None`` is returned. The recording hooks raise
        :class:`~introspect.core.layers.StopForward` themselves, rather than one stop hook on a single
        target as :func:`~introspect.core.layers.forward_until` places, because which of several layers
        runs last is known only when the pass has run.
        """
        if self._stack is None:
            raise RuntimeError("Recorder.forward() needs the recorder attached: use `with attach(...)`")
        self.activations = {}
        if not stop:
            return self.model(x)
        self._stop_after = set(self.names)
        try:
            forward_until(self.model, x)
        finally:
            self._stop_after = set()
        return None


def attach(model: nn.Module, layers: Sequence[str | nn.Module] | str, *, detach: bool = True) -> Recorder:
    """Attach to ``model`` and record the outputs of ``layers``; use as a context manager.

    See :class:`Recorder` for arguments. On exit (also after an exception) every hook is removed
    and the model is exactly as before.
    """
    return Recorder(model, layers, detach=detach)


def snapshot(model: nn.Module) -> dict:
    """A fingerprint of everything ``attach``/rules could change: hooks, flags, parameters.

    Used with :func:`same_snapshot` (by the tests) to prove the model was left as found.
    """
    state = {}
    for name, module in model.named_modules():
        state[name] = (
            type(module).__name__,
            module.training,
            getattr(module, "inplace", None),
            len(module._forward_hooks),
            len(module._forward_pre_hooks),
            len(module._backward_hooks),
            len(getattr(module, "_backward_pre_hooks", {})),
        )
    params = {n: (p.data_ptr(), p.requires_grad, p.detach().clone()) for n, p in model.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    return {"modules": state, "params": params, "buffers": buffers}


def same_snapshot(a: dict, b: dict) -> bool:
    """True when two :func:`snapshot` results describe the same model state, bit for bit."""
    if a["modules"] != b["modules"] or a["params"].keys() != b["params"].keys():
        return False
    for name, (ptr, req, value) in a["params"].items():
        ptr2, req2, value2 = b["params"][name]
        if ptr != ptr2 or req != req2 or not torch.equal(value, value2):
            return False
    return a["buffers"].keys() == b["buffers"].keys() and all(
        torch.equal(v, b["buffers"][k]) for k, v in a["buffers"].items()
    )


__all__ = ["Recorder", "attach", "eval_mode", "snapshot", "same_snapshot"]
