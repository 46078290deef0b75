"""The fast path: a deconvnet that walks a plain chain of layers down, one receptive window at a time.

A projection of one activation is zero outside the unit's receptive field, and the receptive field of
a deep unit covers only part of each lower feature map (a conv5 unit of ZFNet sees 139x139 pixels of a
224x224 image, and a third of the conv1 and conv2 maps). When the path from the input to the chosen
layer is a chain of ``Conv2d``, activation (``ReLU``, ``ReLU6``, ``LeakyReLU``, ``PReLU``, ``RReLU``
and the other modules of :data:`introspect.core.rules.MODULE_TYPES`), ``MaxPool2d``,
``LocalResponseNorm``, ``BatchNorm2d``, ``Dropout`` and ``Identity`` modules -- ZFNet, AlexNet, VGG's
``features``, MobileNetV2 up to its first residual block -- the deconvnet of
Zeiler & Fergus (Sec. 2.1, Fig. 1) is computed here directly, on batches of windows: at each layer a
window is the unit's receptive window in that layer's coordinates, cut to the map (the padding holds
no activations). Windows are sorted by how they are cut (:meth:`Chain.crop_plan`) and go down in
batches of neighbours, which share most of their cuts:

* **unpool**: each value goes back to the position its max-pool **switch** recorded on the way up;
  overlapping pools (3x3, stride 2) can send several values to one position, and they **sum**;
* **rectify**: ``relu`` of the reconstruction at every ``ReLU`` and ``ReLU6`` (and at smooth
  activations, the deconvnet rule's default), ``leaky_relu`` with the module's own slope at a leaky
  rectifier (LeakyReLU, RReLU in eval mode, PReLU per channel);
* **filter**: the transposed filters of each convolution (``conv_transpose2d`` on GPUs and for
  grouped convolutions; on the CPU one matrix product and its scatter back to the window, which is
  several times faster there for a walk's small windows);
* ``BatchNorm2d`` (eval) is a per-channel scale, applied as its transpose (its gradient);
  ``LocalResponseNorm`` is passed through (it has no counterpart in the paper's deconvnet);
  ``Dropout`` (eval) and ``Identity`` are the identity.

These are the rules of ``introspect.core.apply_rule(model, "deconvnet")`` (:meth:`Chain.follows` says
whether a changed rule still is); the generic autograd path
(:mod:`introspect.core.deconvnet`) gives the same numbers for any model, and is used whenever
:func:`trace_chain` finds no such chain.
"""
from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from introspect.core.layers import StopForward, forward_until
from introspect.core.ops import pair as _pair
from introspect.core.ops import pool_stride
from introspect.core.rules import ACTIVATIONS, MODULE_TYPES, Rule, activation_type, signal_slope

_KINDS = {nn.Conv2d: "conv", nn.MaxPool2d: "pool", nn.BatchNorm2d: "bn",
          nn.LocalResponseNorm: "pass", nn.Dropout: "pass", nn.Identity: "pass"}
_KINDS.update({cls: "relu" for cls in MODULE_TYPES})


@dataclass
class Step:
    """One module of the chain, as it ran: its kind, geometry and (for a max pool) its switches.

    Attributes:
        name (str): the module's name in the model.
        kind (str): ``"conv"``, ``"pool"``, ``"relu"`` (any activation: the signal is rectified),
            ``"bn"`` or ``"pass"``.
        module (nn.Module): the module.
        in_hw, out_hw (tuple[int, int]): spatial size of its input and output maps.
        kernel, stride, padding, dilation (tuple[int, int]): sliding-window geometry (``(1, 1)``,
            ``(1, 1)``, ``(0, 0)``, ``(1, 1)`` for element-wise modules).
        switch_yx (tuple[Tensor, Tensor] | None): for a max pool, the **switches**: ``(N, C, Ho,
            Wo)`` int32 row and column, in the pool's input map, of each maximum.
        activation (str | None): for an activation, its type (a key of
            :data:`introspect.core.rules.ACTIVATIONS`).
        slope (float | Tensor | None): for a leaky rectifier, the negative slope of its signal
            rectifier (one per channel for PReLU); ``None``: ``relu``.
    """

    name: str
    kind: str
    module: nn.Module
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    switch_yx: tuple[torch.Tensor, torch.Tensor] | None = None
    activation: str | None = None
    slope: float | torch.Tensor | None = None

    @property
    def switches(self) -> torch.Tensor | None:
        """``(N, C, Ho, Wo)`` int64 flat index of each maximum in the input map (as
        ``F.max_pool2d(..., return_indices=True)`` gives them)."""
        if self.switch_yx is None:
            return None
        rows, cols = self.switch_yx
        return rows.to(torch.int64) * self.in_hw[1] + cols

    @property
    def span(self) -> tuple[int, int]:
        """Extent of one sliding window in input pixels: ``dilation * (kernel - 1) + 1``."""
        return tuple(self.dilation[a] * (self.kernel[a] - 1) + 1 for a in range(2))

    def window_below(self, size: tuple[int, int]) -> tuple[int, int]:
        """Size of the input window that a window of ``size`` output units reads."""
        return tuple((size[a] - 1) * self.stride[a] + self.span[a] for a in range(2))


@dataclass
class Chain:
    """A traced chain: the steps from the input to the chosen layer, and that layer's output.

    Attributes:
        steps (list[Step]): in forward order; ``steps[-1]`` produced ``activations``.
        activations (Tensor): ``(N, C, h, w)`` output of the chosen layer (detached).
        input_hw (tuple[int, int]): the input image size.
    """

    steps: list[Step]
    activations: torch.Tensor
    input_hw: tuple[int, int]
    _bn_scales: dict = field(default_factory=dict)
    _workspace: dict = field(default_factory=dict)
    _state: list = field(default_factory=list)

    def workspace(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device) -> torch.Tensor:
        """A tensor of ``shape`` (uninitialized) whose memory is reused by later calls with the same
        ``name``: large fresh allocations cost page faults on every chunk of a walk."""
        numel = 1
        for n in shape:
            numel *= int(n)
        buffer = self._workspace.get(name)
        if buffer is None or buffer.numel() < numel or buffer.dtype != dtype or buffer.device != torch.device(device):
            buffer = self._workspace[name] = torch.empty(numel, dtype=dtype, device=device)
        return buffer[:numel].view(shape)

    def bytes_per_window(self, size: tuple[int, int]) -> int:
        """Rough peak memory (bytes) of walking one window of ``size`` down the chain."""
        channels, peak = int(self.activations.shape[1]), 0
        for step in reversed(self.steps):
            if step.kind == "conv":
                below = step.window_below(size)
                channels = step.module.in_channels
                cols = channels * step.kernel[0] * step.kernel[1] * size[0] * size[1]
                peak = max(peak, cols + 2 * channels * below[0] * below[1])
                size = below
            elif step.kind == "pool":
                below = step.window_below(size)
                peak = max(peak, 3 * channels * size[0] * size[1] + 2 * channels * below[0] * below[1])
                size = below
        return max(peak, 1) * self.activations.element_size()

    def crop_plan(self, top_lo: int, top_size: int, axis: int) -> tuple:
        """How a window of ``top_size`` units at ``top_lo`` (on the chosen layer's map, along
        ``axis``) is cut to each map on the way down: one ``(cut_before, cut_after)`` per
        convolution or pool. Windows with the same plan have the same shapes all the way down, so
        they are walked as one batch."""
        lo, size, plan = top_lo, top_size, []
        for step in reversed(self.steps):
            if step.kind not in ("conv", "pool"):
                continue
            lo = lo * step.stride[axis] - step.padding[axis]
            size = (size - 1) * step.stride[axis] + step.span[axis]
            before, after = max(0, -lo), max(0, lo + size - step.in_hw[axis])
            plan.append((before, after))
            lo, size = lo + before, max(0, size - before - after)
        return tuple(plan)

    # -- the deconvnet walk ---------------------------------------------------------------------
    def state_versions(self) -> tuple[int, ...]:
        """The version counters of every parameter and buffer of the chain's modules: the chain
        (its activations, switches and walk) holds while they are unchanged."""
        if not self._state:
            self._state[:] = [t for s in self.steps
                              for t in (*s.module.parameters(recurse=False), *s.module.buffers(recurse=False))]
        return tuple(t._version for t in self._state)

    @property
    def image_free_depth(self) -> int:
        """How many steps, from the top down, the walk takes before the first max pool: up to
        there a window's walk depends on the window and on how it is cut to each map
        (:meth:`crop_plan`), not on the image (only the pools' switches do)."""
        depth = 0
        for step in reversed(self.steps):
            if step.kind == "pool":
                break
            depth += 1
        return depth

    def walk(self, windows: torch.Tensor, origin: torch.Tensor, image_index: torch.Tensor, *,
             start: int = 0, stop: int | None = None):
        """Map windows of the chosen layer's output down to the input.

        After each convolution and pool the windows are cut to the map below (its padding holds
        no activations): what all windows have outside is cut off, what only some have is set to
        zero (:func:`fit_to_map`), so a batch of windows with alike :meth:`crop_plan` does the
        least work.

        Args:
            windows (Tensor): ``(B, C, h, w)`` values on the chosen layer's map (zero outside it).
            origin (Tensor): ``(B, 2)`` int64, the map position ``(y, x)`` of each window's corner.
            image_index (Tensor): ``(B,)`` int64, the image of the batch each window belongs to.
            start, stop (int): walk only the steps ``start`` to ``stop`` counted from the top (the
                chosen layer is step 0): a walk split in two parts gives what one walk gives.
                ``windows`` and ``origin`` are then on the map above step ``start``, and so is
                what comes back for a ``stop`` above the input.

        Returns:
            tuple[Tensor, Tensor]: ``(B, C_in, H', W')`` windows on the input (zero outside the
            image) and their ``(B, 2)`` corners in input pixels.
        """
        for step in list(reversed(self.steps))[start:stop]:
            if windows.shape[-1] == 0 or windows.shape[-2] == 0:
                break
            if step.kind == "relu" and step.slope is None:
                windows = windows.clamp_min_(0)
            elif step.kind == "relu":
                slope = step.slope
                if isinstance(slope, torch.Tensor):
                    slope = slope.to(windows.dtype).view(1, -1, 1, 1) if slope.numel() > 1 else slope.to(windows.dtype)
                windows = torch.where(windows >= 0, windows, windows * slope)
            elif step.kind == "bn":
                windows = windows.mul_(self._bn_scale(step).view(1, -1, 1, 1))
            elif step.kind == "conv":
                windows = filter_transposed(windows, step, self)
                origin = origin * _tensor(step.stride, origin) - _tensor(step.padding, origin)
                windows, origin = fit_to_map(windows, origin, step.in_hw)
            elif step.kind == "pool":
                windows, origin = unpool(windows, origin, image_index, step,
                                         workspace=self._buffer("unpool " + step.name, windows))
        return windows, origin

    def follows(self, rule: Rule) -> bool:
        """Whether ``rule`` is the deconvnet this walk computes for every step of the chain: the
        ``deconvnet`` value for each activation type, LRN passed through, BatchNorm as its gradient."""
        for step in self.steps:
            if step.kind == "relu" and rule.of(step.activation) != "deconvnet":
                return False
            if step.kind == "bn" and rule.batchnorm != "gradient":
                return False
            if isinstance(step.module, nn.LocalResponseNorm) and rule.lrn != "pass":
                return False
        return True

    def activation_rules(self) -> dict[str, str]:
        """``{activation type: "deconvnet"}`` for the activations of the chain (as
        :func:`introspect.core.apply_rule` records them)."""
        return {ACTIVATIONS[s.activation].name: "deconvnet" for s in self.steps if s.kind == "relu"}

    def _buffer(self, name: str, like: torch.Tensor):
        """``shape -> tensor``: reusable memory named ``name``, of ``like``'s dtype and device."""
        dtype, device = like.dtype, like.device
        return lambda shape: self.workspace(name, shape, dtype, device)

    def _bn_scale(self, step: Step) -> torch.Tensor:
        if step.name not in self._bn_scales:
            bn = step.module
            scale = torch.rsqrt(bn.running_var.detach() + bn.eps)
            if bn.weight is not None:
                scale = scale * bn.weight.detach()
            self._bn_scales[step.name] = scale.to(self.activations.dtype)
        return self._bn_scales[step.name]


def _tensor(pair, like: torch.Tensor) -> torch.Tensor:
    """``pair`` as a tensor of ``like``'s dtype and device; made once for each pair (callers only
    read it: a walk uses a handful of them per step on every call)."""
    return _pair_tensor(tuple(int(v) for v in pair), like.dtype, like.device)


@functools.lru_cache(maxsize=256)
def _pair_tensor(pair: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor(pair, dtype=dtype, device=device)


def filter_transposed(windows: torch.Tensor, step: Step, chain: Chain | None = None) -> torch.Tensor:
    """Filter ``(B, C_out, h, w)`` windows with the transposed weights of a convolution step.

    Returns the ``(B, C_in, (h - 1) * stride + span, ...)`` input window (no padding is cut: the
    caller tracks the window's corner). ``conv_transpose2d`` on GPUs and for grouped convolutions;
    on the CPU the same sum as one matrix product and its scatter back to the window
    (:func:`use_fold`, :data:`ROWS_AT_MOST`), which runs several times faster there for the small
    windows of a walk.
    """
    conv = step.module
    weight = conv.weight.detach().to(windows.dtype)
    if windows.device.type == "cpu" and conv.groups == 1:
        if use_fold(step, windows.device):
            return _filter_transposed_fold(windows, weight, step, chain)
        b, _, h, w = windows.shape
        if b * h * w <= ROWS_AT_MOST:
            return _filter_transposed_rows(windows, conv.weight, step)
    return F.conv_transpose2d(windows, weight, None, step.stride, 0, 0, conv.groups, step.dilation)


#: Window positions (over the batch) up to which :func:`_filter_transposed_rows` runs on the CPU;
#: above it ``conv_transpose2d``'s blocked kernels win (measured on ZFNet's walk: conv2 of one window,
#: 225 positions, 1.4x faster in rows; of 57 windows, 12,825 positions, 1.3x slower).
ROWS_AT_MOST = 2048


def use_fold(step: Step, device: torch.device) -> bool:
    """Whether the column-major form (matrix product + ``fold``) is used for a convolution step: on
    the CPU, for an ungrouped convolution with few input channels (the first layer, 3 -> 96, whose
    windows are wide and whose transpose has 3 output channels); the channel-last form
    (:func:`_filter_transposed_rows`) serves the other ungrouped convolutions on the CPU."""
    conv = step.module
    return device.type == "cpu" and conv.groups == 1 and conv.in_channels < 16


def _filter_transposed_fold(windows: torch.Tensor, weight: torch.Tensor, step: Step, chain=None) -> torch.Tensor:
    b, c_out, h, w = windows.shape
    c_in, kh, kw = weight.shape[1], weight.shape[2], weight.shape[3]
    matrix = weight.reshape(c_out, c_in * kh * kw).t()
    if chain is None:
        cols = torch.matmul(matrix, windows.reshape(b, c_out, h * w))
    else:
        cols = torch.matmul(matrix, windows.reshape(b, c_out, h * w),
                            out=chain.workspace("cols " + step.name, (b, c_in * kh * kw, h * w), windows.dtype,
                                                windows.device))
    return F.fold(cols, step.window_below((h, w)), (kh, kw), dilation=step.dilation, stride=step.stride)


#: ``id(weight) -> (weak reference, version, dtype, (C_out, kh * kw * C_in) matrix)`` for
#: :func:`_filter_transposed_rows`: the weights rearranged once, not on every window.
_ROW_WEIGHTS: dict[int, tuple] = {}


def _weight_rows(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``weight`` (C_out, C_in, kh, kw) as a ``(C_out, kh * kw * C_in)`` matrix of ``dtype``, kept
    while the weight lives and is unchanged (same version)."""
    kept = _ROW_WEIGHTS.get(id(weight))
    if kept is not None and kept[0]() is weight and kept[1] == weight._version and kept[2] == dtype:
        return kept[3]
    for key in [k for k, v in _ROW_WEIGHTS.items() if v[0]() is None]:
        del _ROW_WEIGHTS[key]  # weights of models that are gone
    rows = weight.detach().to(dtype).permute(0, 2, 3, 1).reshape(weight.shape[0], -1).contiguous()
    _ROW_WEIGHTS[id(weight)] = (weakref.ref(weight), weight._version, dtype, rows)
    return rows


def _filter_transposed_rows(windows: torch.Tensor, weight: torch.Tensor, step: Step) -> torch.Tensor:
    """The transposed filters in channel-last form: one ``(B h w, C_out) @ (C_out, kh kw C_in)``
    product gives each window position's contribution to a ``kh x kw x C_in`` patch below, and
    ``kh * kw`` strided additions put the patches in place. Returns a ``(B, C_in, H', W')`` view of
    a channel-last tensor (which the next step of a walk reads without a copy)."""
    b, c_out, h, w = windows.shape
    c_in, kh, kw = weight.shape[1], weight.shape[2], weight.shape[3]
    rows = _weight_rows(weight, windows.dtype)
    cols = torch.matmul(windows.permute(0, 2, 3, 1).reshape(b * h * w, c_out), rows).view(b, h, w, kh, kw, c_in)
    big_h, big_w = step.window_below((h, w))
    out = windows.new_zeros(b, big_h, big_w, c_in)
    (sy, sx), (dy, dx) = step.stride, step.dilation
    reach_y, reach_x = sy * (h - 1) + 1, sx * (w - 1) + 1
    for ky in range(kh):
        for kx in range(kw):
            out[:, ky * dy:ky * dy + reach_y:sy, kx * dx:kx * dx + reach_x:sx].add_(cols[:, :, :, ky, kx])
    return out.permute(0, 3, 1, 2)


def fit_to_map(windows: torch.Tensor, origin: torch.Tensor, hw: tuple[int, int]):
    """Cut ``(B, C, h, w)`` windows at ``(B, 2)`` corners to a map of size ``hw``.

    The part that every window has outside the map is sliced off (the corners move); what some
    windows still have outside is set to zero in place. Windows cut alike (neighbours in
    :meth:`Chain.crop_plan` order) lose most of their outside part to the slicing.
    """
    b, _, h, w = windows.shape
    size, limit = _tensor((h, w), origin), _tensor(hw, origin)
    before = (-origin).clamp_min(0)
    after = (origin + size - limit).clamp_min(0)
    cuts = torch.cat([before, after], dim=1)
    low, high = cuts.amin(dim=0).tolist(), cuts.amax(dim=0).tolist()
    if any(low):  # the common part: slice it off
        top, left, bottom, right = low
        windows = windows[:, :, top:max(top, h - bottom), left:max(left, w - right)]
        origin = origin + _tensor((top, left), origin)
        h, w = windows.shape[-2:]
    if low == high:
        return windows, origin
    rows = origin[:, 0:1] + torch.arange(h, device=origin.device)
    cols = origin[:, 1:2] + torch.arange(w, device=origin.device)
    keep = ((rows >= 0) & (rows < hw[0])).view(b, 1, h, 1) & ((cols >= 0) & (cols < hw[1])).view(b, 1, 1, w)
    return windows.mul_(keep.to(windows.dtype)), origin


def gather_windows(
    table: torch.Tensor, image_index: torch.Tensor, origin: torch.Tensor, h: int, w: int
) -> torch.Tensor:
    """``table[n, :, y:y + h, x:x + w]`` for each window: ``(B, C, h, w)`` from an ``(N, C, H, W)``
    table, in one indexing operation (on a strided view of all windows); positions outside the
    table read 0.

    One operation rather than one copy per window: with several threads, every small operation
    pays a thread barrier, and on a busy machine those barriers cost more than the copies.
    """
    rows_max, cols_max = table.shape[-2], table.shape[-1]
    lo = origin.amin(dim=0).tolist()
    hi = origin.amax(dim=0).tolist()
    top, left = max(0, -lo[0]), max(0, -lo[1])
    bottom, right = max(0, hi[0] + h - rows_max), max(0, hi[1] + w - cols_max)
    if len(image_index) == 1 and not (top or left or bottom or right):  # one window inside the table: a copy
        n, (y, x) = int(image_index[0]), lo
        return table[n:n + 1, :, y:y + h, x:x + w].clone()
    if top or left or bottom or right:
        table = F.pad(table, (left, right, top, bottom))
    views = table.unfold(2, h, 1).unfold(3, w, 1)             # N x C x (H-h+1) x (W-w+1) x h x w
    dev = table.device
    return views[image_index.to(dev), :, (origin[:, 0] + top).to(dev), (origin[:, 1] + left).to(dev)]


def unpool(windows: torch.Tensor, origin: torch.Tensor, image_index: torch.Tensor, step: Step, workspace=None):
    """Unpool windows through a max-pool step with its switches.

    Each value of a ``(B, C, h, w)`` window on the pool's output goes to the input position its
    switch recorded; values landing on one position (overlapping pools) are summed, as the
    gradient of max pooling does (``F.max_unpool2d`` would overwrite them instead). The window
    below is ``(h - 1) * stride + span`` high and wide, less what every window of the batch has
    outside the pool's input map (nothing lands there).

    Args:
        windows (Tensor): ``(B, C, h, w)``, zero outside the pool's output map.
        origin (Tensor): ``(B, 2)`` int64 corners on the pool's output map.
        image_index (Tensor): ``(B,)`` int64 image of each window.
        step (Step): the pool step (with its switches).
        workspace (callable | None): ``workspace(shape)`` gives reusable memory for the result.

    Returns:
        tuple[Tensor, Tensor]: the ``(B, C, H', W')`` window on the pool's input and its corner.
    """
    b, c, h, w = windows.shape
    big_h, big_w = step.window_below((h, w))
    corner = origin * _tensor(step.stride, origin) - _tensor(step.padding, origin)
    limit = _tensor(step.in_hw, corner)
    before = (-corner).clamp_min(0).amin(dim=0).tolist()                       # cut by every window
    after = (corner + _tensor((big_h, big_w), corner) - limit).clamp_min(0).amin(dim=0).tolist()
    out_h, out_w = max(0, big_h - before[0] - after[0]), max(0, big_w - before[1] - after[1])
    # the input map positions of the switches, relative to each window's corner below, in int32
    first = corner + _tensor(before, corner)
    rows, cols = step.switch_yx
    index = gather_windows(rows, image_index, origin, h, w).sub_(first[:, 0].to(torch.int32).view(b, 1, 1, 1))
    index.mul_(out_w).add_(gather_windows(cols, image_index, origin, h, w))
    index.sub_(first[:, 1].to(torch.int32).view(b, 1, 1, 1))
    ho, wo = step.out_hw
    if bool((origin.amin(dim=0) < 0).any() | (origin[:, 0].amax() + h > ho) | (origin[:, 1].amax() + w > wo)):
        index.clamp_(0, max(out_h * out_w - 1, 0))  # off-map positions hold zeros: any place will do
    index = index.to(torch.int64)
    shape = (b, c, out_h * out_w)
    out = windows.new_zeros(shape) if workspace is None else workspace(shape).zero_()
    out.scatter_add_(2, index.view(b, c, h * w), windows.reshape(b, c, h * w))
    return out.view(b, c, out_h, out_w), first


# --------------------------------------------------------------------------------------------------
# tracing
# --------------------------------------------------------------------------------------------------
class _Between(TorchFunctionMode):
    """Notes any tensor computation that happens between the leaf modules (outside all of them)."""

    def __init__(self, state: dict):
        super().__init__()
        self.state = state

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.state["depth"] == 0 and not self.state["done"]:
            name = getattr(func, "__name__", "")
            if isinstance(out, torch.Tensor) or name.endswith("_"):
                self.state["broken"] = True
                raise StopForward  # not a chain: no need to run further
        return out


def _supported(module: nn.Module) -> bool:
    kind = _KINDS.get(type(module))
    if kind is None:
        return False
    if kind == "conv":
        return module.padding_mode == "zeros" and not isinstance(module.padding, str)
    if kind == "pool":
        return not module.return_indices
    if kind == "bn":
        return module.running_var is not None and not module.training
    if kind == "pass" and isinstance(module, nn.Dropout):
        return not module.training
    if kind == "relu" and isinstance(module, nn.RReLU):
        return not module.training  # in training mode its slopes are random
    return True


def _switches(inp: torch.Tensor, pool: nn.MaxPool2d) -> tuple[torch.Tensor, torch.Tensor]:
    kernel, dilation = _pair(pool.kernel_size), _pair(pool.dilation)
    stride = pool_stride(pool.stride, pool.kernel_size)
    padding = _pair(pool.padding)
    _, index = F.max_pool2d(inp, kernel, stride, padding, dilation, ceil_mode=pool.ceil_mode,
                            return_indices=True)
    index = index.to(torch.int32)  # (int32 division is the faster one)
    width = inp.shape[-1]
    rows = torch.div(index, width, rounding_mode="floor")
    return rows, index - rows * width


def _make_step(name: str, module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> Step:
    kind = _KINDS[type(module)]
    step = Step(name, kind, module, tuple(inp.shape[-2:]), tuple(out.shape[-2:]))
    if kind == "conv":
        step.kernel, step.stride = _pair(module.kernel_size), _pair(module.stride)
        step.padding, step.dilation = _pair(module.padding), _pair(module.dilation)
    elif kind == "pool":
        step.kernel, step.dilation = _pair(module.kernel_size), _pair(module.dilation)
        step.stride = pool_stride(module.stride, module.kernel_size)
        step.padding = _pair(module.padding)
        step.switch_yx = _switches(inp, module)
    elif kind == "relu":
        step.activation, step.slope = activation_type(module), signal_slope(module)
    return step


def trace_chain(model: nn.Module, x: torch.Tensor, target: nn.Module) -> Chain | None:
    """Run ``model(x)`` up to ``target`` and return the :class:`Chain` that led there, or ``None``.

    ``None`` (use the generic path) unless every leaf module that ran before ``target``'s output is
    one of the supported kinds, each takes the previous one's output as its only input (the first
    takes ``x`` itself), no tensor is computed between them (no ``F.relu``, residual sum or
    reshaping outside modules), and ``target``'s output is the last one's output. Runs under
    ``torch.no_grad()``; the model must be in eval mode. Max-pool switches are recorded on the way.
    """
    leaves = [(n, m) for n, m in model.named_modules() if n and next(m.children(), None) is None]
    steps: list[Step] = []
    state: dict[str, Any] = {"depth": 0, "broken": False, "done": False, "last": None}

    def enter(module, args):
        state["depth"] += 1

    def make_leave(name):
        def leave(module, args, output):
            try:
                if state["done"] or state["broken"]:
                    return
                inp = args[0] if len(args) == 1 else None
                expected = x if state["last"] is None else state["last"]
                if (inp is not expected or not _supported(module) or not isinstance(output, torch.Tensor)
                        or output.dim() != 4):
                    state["broken"] = True
                    raise StopForward  # not a chain: no need to run further
                steps.append(_make_step(name, module, inp, output))
                state["last"] = output
            finally:
                state["depth"] -= 1
        return leave

    def reached(module, args, output):
        state["done"] = True  # what still runs while the pass unwinds is no part of the chain

    handles = []
    try:
        for name, module in leaves:
            handles.append(module.register_forward_pre_hook(enter))
            handles.append(module.register_forward_hook(make_leave(name)))
        handles.append(target.register_forward_hook(reached))
        with torch.no_grad(), _Between(state):
            out = forward_until(model, x, target)  # its stop hook comes last: the hooks above see the output first
    finally:
        for h in handles:
            h.remove()
    if state["broken"] or not steps or out is None or out is not state["last"]:
        return None
    return Chain(steps, out.detach(), tuple(x.shape[-2:]))


__all__ = ["Chain", "Step", "trace_chain", "unpool", "filter_transposed", "fit_to_map", "gather_windows"]
