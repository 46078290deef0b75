"""Layer names, output shapes, and receptive / projective fields.

Names are those of ``model.named_modules()`` plus aliases in the paper's words (``conv1``..``conv5``,
``pool1``, ``norm1``, ``fc6``...). Aliases come from the model class (a ``layer_aliases`` class
attribute, as the bundled ZFNet and AlexNet have) or from the checkpoint's metadata.

Receptive fields are computed by tracing one forward pass under a ``TorchFunctionMode`` that carries a
:class:`Field` along with every tensor: convolutions and pools grow it, element-wise operations (ReLU,
BatchNorm, residual sums, normalization across channels) merge it, global operations (adaptive pools,
linear layers) make it the whole image. This works for any module, residual networks included.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from introspect.core.device import model_device, model_dtype
from introspect.core.ops import call_arg as _arg
from introspect.core.ops import conv_padding, pool_stride
from introspect.core.ops import pair as _pair
from introspect.errors import IntrospectError, closest

Pair = tuple[int, int]


# --------------------------------------------------------------------------------------------------
# names
# --------------------------------------------------------------------------------------------------
def aliases(model: nn.Module) -> dict[str, str]:
    """Alias -> canonical module name, from the model's metadata or its class's ``layer_aliases``."""
    meta = getattr(model, "introspect_meta", None)
    found = dict(getattr(type(model), "layer_aliases", {}) or {})
    if meta is not None and getattr(meta, "aliases", None):
        found.update(meta.aliases)
    return found


def layer_names(model: nn.Module) -> list[str]:
    """Every addressable layer name: module names in definition order, then aliases."""
    return [name for name, _ in model.named_modules() if name] + list(aliases(model))


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """Return ``(canonical_name, module)`` for a layer name, alias or module of ``model``.

    Raises:
        IntrospectError: the name is unknown (the closest names are suggested) or the module is not
            part of ``model``.
    """
    modules = dict(model.named_modules())
    if isinstance(layer, nn.Module):
        for name, module in modules.items():
            if module is layer:
                return name, module
        raise IntrospectError(
            f"module {type(layer).__name__} is not part of the model; pass one of its layers or a layer name"
        )
    name = str(layer)
    table = aliases(model)
    canonical = table.get(name, name)
    if canonical in modules and canonical != "":
        return canonical, modules[canonical]
    hint = closest(name, layer_names(model))
    raise IntrospectError(
        f"unknown layer {name!r}{hint}; run `introspect layers` to list the layers of this model"
    )


def alias_of(model: nn.Module, name: str) -> str | None:
    """The alias of a canonical layer name, if it has one."""
    for alias, canonical in aliases(model).items():
        if canonical == name:
            return alias
    return None


def check_channels(channels: int | Sequence[int] | None, n_maps: int, layer: str,
                   none_means: str = "the default maps") -> list[int] | None:
    """``channels`` (None, an int or a sequence of ints) as a list of feature maps of ``layer``,
    which has ``n_maps``; None stays None (``none_means`` says what it means, for the error of an
    empty list). A map that does not exist is a one-line :class:`IntrospectError`."""
    if channels is None:
        return None
    if isinstance(channels, int):
        channels = [channels]
    chosen = [int(c) for c in channels]
    if not chosen:
        raise IntrospectError(f"channels is empty; pass None for {none_means} or at least one channel")
    bad = [c for c in chosen if not 0 <= c < n_maps]
    if bad:
        raise IntrospectError(
            f"channel {bad[0]} does not exist in layer {layer!r}, which has {n_maps} feature maps; use 0..{n_maps - 1}"
        )
    return chosen


def display_name(model: nn.Module, name: str) -> str:
    """The name to show for a canonical layer name: the paper's alias when the model has one
    (``conv5``), else the module name (``features.12``)."""
    return alias_of(model, name) or name


def conv_layers(model: nn.Module) -> list[str]:
    """Names of the ``nn.Conv2d`` layers of ``model`` in definition order."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def executed_conv_layers(model: nn.Module, x: torch.Tensor | None = None) -> list[str] | None:
    """Names of the ``nn.Conv2d`` layers that run in the eval-mode forward pass, in the order they run.

    A module can be defined and never run in eval mode: GoogLeNet's and Inception v3's auxiliary
    classifiers come last by registration but only run in training. One forward pass of ``x[:1]`` (or
    zeros of the model's input size) under ``torch.no_grad()`` with a forward hook on each convolution
    tells; the hooks are removed and the training flags restored afterwards.

    Returns:
        list[str] | None: the names in execution order (each once), or None when the forward pass
        fails on that input (the caller falls back to definition order).
    """
    from introspect.core.attach import eval_mode

    convs = {m: name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    if x is None:
        from introspect.models import meta_of

        x = torch.zeros(1, *meta_of(model).input_size, device=model_device(model), dtype=model_dtype(model))
    ran: dict[str, None] = {}
    handles = [m.register_forward_hook(lambda mod, inp, out: ran.setdefault(convs[mod])) for m in convs]
    try:
        with eval_mode(model), torch.no_grad():
            model(x[:1])
    except Exception:  # an input the model does not take: no trace
        return None
    finally:
        for h in handles:
            h.remove()
    return list(ran)


def last_conv_layer(model: nn.Module, x: torch.Tensor | None = None) -> str:
    """The name of the last convolutional layer that runs in the eval-mode forward pass (the default
    layer of the analyses); definition order when no forward pass is possible on ``x`` (or zeros of the
    model's input size)."""
    convs = conv_layers(model)
    if not convs:
        raise IntrospectError("the model has no Conv2d layer; pass --layer to choose one")
    ran = executed_conv_layers(model, x)
    return ran[-1] if ran else convs[-1]


# --------------------------------------------------------------------------------------------------
# fields
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Field:
    """The receptive field of the units of one feature map, per axis (rows, columns).

    Unit ``o`` along an axis sees input pixels ``[lo + o * jump, lo + o * jump + size - 1]`` (before
    clipping to the image; ``lo`` is negative where padding reaches outside). ``size`` is the
    theoretical receptive-field size, ``jump`` the stride of the map in input pixels. A global field
    (after adaptive pooling or a linear layer) covers the whole input.
    """

    size: tuple[int, int]
    jump: tuple[int, int]
    lo: tuple[int, int]
    is_global: bool = False

    @classmethod
    def identity(cls) -> Field:
        return cls((1, 1), (1, 1), (0, 0))

    def receptive_box(self, oy: int, ox: int, image_hw: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
        """Input box ``(y0, x0, y1, x1)`` (end-exclusive) seen by the unit at ``(oy, ox)``.

        With ``image_hw`` the box is clipped to the image.
        """
        if self.is_global:
            if image_hw is None:
                raise ValueError("a global field needs image_hw to give a box")
            return (0, 0, image_hw[0], image_hw[1])
        y0 = self.lo[0] + oy * self.jump[0]
        x0 = self.lo[1] + ox * self.jump[1]
        y1, x1 = y0 + self.size[0], x0 + self.size[1]
        if image_hw is not None:
            y0, x0 = max(y0, 0), max(x0, 0)
            y1, x1 = min(y1, image_hw[0]), min(x1, image_hw[1])
        return (y0, x0, y1, x1)

    def projective_box(
        self, box: tuple[int, int, int, int], out_hw: tuple[int, int]
    ) -> tuple[int, int, int, int]:
        """Units ``(oy0, ox0, oy1, ox1)`` (end-exclusive) whose receptive field meets the input ``box``.

        This is the projective field of the box: the part of the map that can change when the
        pixels of ``box = (y0, x0, y1, x1)`` change. Empty ranges come back with ``oy0 == oy1``.
        """
        if self.is_global:
            return (0, 0, out_hw[0], out_hw[1])
        out = []
        for axis, (b0, b1) in enumerate(((box[0], box[2]), (box[1], box[3]))):
            size, jump, lo, n = self.size[axis], self.jump[axis], self.lo[axis], out_hw[axis]
            # unit o meets [b0, b1) iff lo + o*jump <= b1 - 1 and lo + o*jump + size - 1 >= b0
            first = max(0, math.ceil((b0 - size + 1 - lo) / jump))
            last = min(n - 1, math.floor((b1 - 1 - lo) / jump))
            out.append((first, max(first, last + 1)))
        return (out[0][0], out[1][0], out[0][1], out[1][1])

    def then(self, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair = (1, 1)) -> Field:
        """The field after a sliding-window layer (convolution or pooling) on this map."""
        if self.is_global:
            return self
        size = (self.size[0] + (kernel[0] - 1) * dilation[0] * self.jump[0],
                self.size[1] + (kernel[1] - 1) * dilation[1] * self.jump[1])
        lo = (self.lo[0] - padding[0] * self.jump[0], self.lo[1] - padding[1] * self.jump[1])
        jump = (self.jump[0] * stride[0], self.jump[1] * stride[1])
        return Field(size, jump, lo)

    def union(self, other: Field) -> Field:
        """The field of an element-wise combination (a residual sum) of two maps."""
        if self.is_global or other.is_global:
            return Field(self.size, self.jump, self.lo, True)
        if self.jump != other.jump:
            return Field(self.size, self.jump, self.lo, True)
        lo = (min(self.lo[0], other.lo[0]), min(self.lo[1], other.lo[1]))
        hi = (max(self.lo[0] + self.size[0], other.lo[0] + other.size[0]),
              max(self.lo[1] + self.size[1], other.lo[1] + other.size[1]))
        return Field((hi[0] - lo[0], hi[1] - lo[1]), self.jump, lo)

    def as_global(self) -> Field:
        return Field(self.size, self.jump, self.lo, True)


_SLIDING = {
    F.conv2d: ("conv",),
    F.max_pool2d: ("pool",),
    F.avg_pool2d: ("pool",),
    torch.max_pool2d: ("pool",),
    torch.conv2d: ("conv",),
    torch._C._nn.avg_pool2d: ("pool",),
    F.max_pool2d_with_indices: ("pool",),
}
_GLOBAL = {
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d,
    torch._C._nn.adaptive_avg_pool2d,
    F.linear,
    torch.flatten,
    torch.Tensor.flatten,
    torch.Tensor.view,
    torch.Tensor.reshape,
    torch.reshape,
    torch.mean,
    torch.Tensor.mean,
    torch.sum,
    torch.Tensor.sum,
}


class _FieldMode(TorchFunctionMode):
    """Carries a :class:`Field` along with each tensor of a forward pass."""

    def __init__(self):
        super().__init__()
        self.fields: dict[int, tuple[torch.Tensor, Field]] = {}

    def field(self, t: object) -> Field | None:
        entry = self.fields.get(id(t)) if isinstance(t, torch.Tensor) else None
        return entry[1] if entry is not None and entry[0] is t else None

    def set(self, t: object, field: Field) -> None:
        if isinstance(t, torch.Tensor):
            self.fields[id(t)] = (t, field)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
        for a in args:
            if isinstance(a, (list, tuple)):
                inputs += [t for t in a if isinstance(t, torch.Tensor)]
        known = [f for f in (self.field(t) for t in inputs) if f is not None]
        if not known:
            return out
        first = known[0]
        if func in _SLIDING:
            x = args[0]
            if func in (F.conv2d, torch.conv2d):
                weight = _arg(args, kwargs, 1, "weight", None)
                kernel = tuple(weight.shape[-2:])
                stride = _pair(_arg(args, kwargs, 3, "stride", 1))
                dilation = _pair(_arg(args, kwargs, 5, "dilation", 1))
                padding, _ = conv_padding(_arg(args, kwargs, 4, "padding", 0), kernel, dilation)
            else:
                kernel = _pair(_arg(args, kwargs, 1, "kernel_size", 1))
                stride = pool_stride(_arg(args, kwargs, 2, "stride", None), kernel)
                padding = _pair(_arg(args, kwargs, 3, "padding", 0))
                dilation = (
                    _pair(_arg(args, kwargs, 4, "dilation", 1)) if "max" in getattr(func, "__name__", "") else (1, 1)
                )
            before = self.field(x)
            new = before.then(kernel, stride, padding, dilation) if before else first
        elif func in _GLOBAL:
            x = args[0] if args else None
            same = (
                isinstance(out, torch.Tensor) and isinstance(x, torch.Tensor) and out.dim() == x.dim() >= 3
                and out.shape[-2:] == x.shape[-2:] and func not in (F.linear,)
            )
            new = first if same else first.as_global()
        else:
            new = first
            for f in known[1:]:
                new = new.union(f)
        if isinstance(out, torch.Tensor):
            self.set(out, new)
        elif isinstance(out, (tuple, list)):
            for o in out:
                self.set(o, new)
        return out


@dataclass
class LayerInfo:
    """One row of ``introspect layers``: a module, its alias, type, output shape and field."""

    name: str
    alias: str | None
    type: str
    output_shape: tuple[int, ...] | None
    rf_size: tuple[int, int] | None
    rf_stride: tuple[int, int] | None
    rf_lo: tuple[int, int] | None
    is_global: bool
    params: int

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("output_shape", "rf_size", "rf_stride", "rf_lo"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    @property
    def field(self) -> Field | None:
        if self.rf_size is None or self.rf_stride is None or self.rf_lo is None:
            return None
        return Field(self.rf_size, self.rf_stride, self.rf_lo, self.is_global)


def layer_table(model: nn.Module, input_size: Sequence[int] = (3, 224, 224), *,
                until: str | None = None) -> list[LayerInfo]:
    """Trace one forward pass of a zero image and describe every module.

    Args:
        model (nn.Module): any module taking an ``N x C x H x W`` image batch.
        input_size (tuple[int, int, int]): ``(C, H, W)`` of the input.
        until (str | None): a canonical module name: the pass stops at that module's (first) output
            (:func:`forward_until`), so layers above it need not accept the input.

    Returns:
        list[LayerInfo]: one row per named module, in the order of ``named_modules()``; modules that
        did not run have ``output_shape=None``.
    """
    fields: dict[str, tuple[tuple[int, ...], Field | None]] = {}
    mode = _FieldMode()
    handles = []

    def make_hook(name):
        def hook(module, inputs, output):
            value = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(value, torch.Tensor):
                fields[name] = (tuple(value.shape[1:]), mode.field(value))
        return hook

    named = [(n, m) for n, m in model.named_modules() if n]
    try:
        for name, module in named:
            handles.append(module.register_forward_hook(make_hook(name)))
        x = torch.zeros((1, *input_size), device=model_device(model), dtype=model_dtype(model))
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), mode:
                mode.set(x, Field.identity())
                forward_until(model, x, dict(named)[until] if until is not None else None)
        finally:
            model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    rows = []
    for name, module in named:
        shape, field = fields.get(name, (None, None))
        rows.append(
            LayerInfo(
                name=name,
                alias=alias_of(model, name),
                type=type(module).__name__,
                output_shape=shape,
                rf_size=field.size if field else None,
                rf_stride=field.jump if field else None,
                rf_lo=field.lo if field else None,
                is_global=bool(field and field.is_global),
                params=sum(p.numel() for p in module.parameters(recurse=False)),
            )
        )
    return rows


def receptive_field(
    model: nn.Module, layer: str | nn.Module, input_size: Sequence[int] = (3, 224, 224), *, stop: bool = False
) -> Field:
    """The :class:`Field` of the units of ``layer`` for an input of ``input_size`` ``(C, H, W)``.

    With ``stop=True`` the traced pass ends at the layer's first output, so layers above it (a
    classifier sized for another input, say) need not accept the input.
    """
    name, _ = resolve_layer(model, layer)
    for row in layer_table(model, input_size, until=name if stop else None):
        if row.name == name:
            if row.field is None:
                raise IntrospectError(f"layer {name!r} did not run in a forward pass; choose another layer")
            return row.field
    raise IntrospectError(f"layer {name!r} not found")  # unreachable: resolve_layer checked it


# --------------------------------------------------------------------------------------------------
# stopping a forward pass at a layer
# --------------------------------------------------------------------------------------------------
class StopForward(Exception):
    """Raised by a forward hook to end the forward pass there: nothing above it needs computing.

    :func:`forward_until` catches it; a hook of the caller's own may raise it too (to stop once every
    recorded layer has run, as :meth:`introspect.core.attach.Recorder.forward` does with ``stop=True``,
    or as soon as the pass turns out to be of no use, as the chain tracer does).
    """


def forward_until(model: nn.Module, x: torch.Tensor, target: nn.Module | None = None) -> Any:
    """Run ``model(x)`` only as far as ``target``'s output, and return that output.

    The one way introspect stops a forward pass at a layer: a forward hook on ``target`` (registered
    after the caller's own hooks, so they see its output first) raises :class:`StopForward`, which
    ends the pass; the hook is removed on return, also after an error. Returns ``None`` when
    ``target`` did not run before the pass ended -- it finished, or another hook raised
    :class:`StopForward` first. With ``target=None`` only the caller's hooks can stop the pass.

    Example:
        >>> conv2 = forward_until(model, x, model.features[3])   # layers above conv2 do not run
    """
    reached: list[Any] = []

    def stop(module: nn.Module, inputs: Any, output: Any) -> None:
        reached.append(output)
        raise StopForward

    handle = target.register_forward_hook(stop) if target is not None else None
    try:
        model(x)
    except StopForward:
        pass
    finally:
        if handle is not None:
            handle.remove()
    return reached[0] if reached else None


def iter_leaves(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Named modules without children."""
    for name, module in model.named_modules():
        if name and not any(True for _ in module.children()):
            yield name, module


__all__ = [
    "aliases", "layer_names", "resolve_layer", "alias_of", "display_name", "check_channels", "conv_layers",
    "last_conv_layer", "Field", "LayerInfo", "layer_table", "receptive_field", "iter_leaves", "StopForward",
    "forward_until"
]
