"""One forward pass of a batch, then deconvnet projections of any activations of one layer.

:class:`Deconvnet` runs the forward pass once and keeps what the way down needs: the max-pool
switches of a plain chain (the fast path of :mod:`introspect.core.chain`), or, for any other
model (ResNet's residual sums, functional ReLUs, a user's module), the autograd graph recorded under
``introspect.core.apply_rule(model, "deconvnet")``, from which many projections come out of batched
backward passes (``torch.autograd.grad(..., is_grads_batched=True)``). Both paths apply the same
rules -- ``relu`` of the reconstruction at rectifiers, unpooling with the switches (overlapping
contributions summed), transposed filters, BatchNorm as its transpose (a per-channel scale),
local response normalization passed through -- and give the same numbers.

The input of the deconvnet is a rectified feature map (Fig. 1 of the paper): the kept activations
are clamped at zero, so a map whose strongest activation is not positive projects to zero.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from introspect.core.attach import attach, eval_mode
from introspect.core.chain import Chain, gather_windows, trace_chain
from introspect.core.choices import METHODS, MODES  # noqa: E402  (plain values, torch-free)
from introspect.core.layers import Field, receptive_field, resolve_layer
from introspect.core.rules import Rule, apply_rule, resolve_rule
from introspect.errors import IntrospectError

#: Memory for the windows of one walk of the fast path, in bytes.
CHAIN_BUDGET = 256 * 2**20
#: Projections per batched backward pass of the generic path.
AUTOGRAD_BATCH = 16


@contextlib.contextmanager
def readable_errors(images: torch.Tensor, shape=None):
    """A model that cannot run on the input (wrong size or channels) becomes one IntrospectError line
    naming ``shape`` (default the shape of ``images``); errors that are already one line, and
    out-of-memory errors, pass through."""
    try:
        yield
    except (RuntimeError, ValueError) as exc:
        if isinstance(exc, IntrospectError) or "out of memory" in str(exc).lower():
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise IntrospectError(
            f"the model cannot run on images of shape {tuple(images.shape if shape is None else shape)}: {first}; "
            "check the image size and channels the model expects"
        ) from None


@dataclass(frozen=True)
class Frame:
    """Where the stored window of each projection sits in the input, per axis.

    A projection of one activation (mode ``"max"``) is zero outside the unit's receptive field, so
    only that window is kept: ``size`` is the receptive-field size and the corner is
    ``lo + position * jump`` (parts outside the image are zero). Where the receptive field is as
    large as the image or global, and in mode ``"map"``, the window is the whole image.
    """

    size: tuple[int, int]
    lo: tuple[int, int]
    jump: tuple[int, int]
    whole: tuple[bool, bool]

    @classmethod
    def of(cls, field: Field, image_hw: tuple[int, int], mode: str) -> Frame:
        whole = tuple(mode == "map" or field.is_global or field.size[a] >= image_hw[a] for a in range(2))
        size = tuple(image_hw[a] if whole[a] else field.size[a] for a in range(2))
        lo = tuple(0 if whole[a] else field.lo[a] for a in range(2))
        jump = tuple(0 if whole[a] else field.jump[a] for a in range(2))
        return cls(size, lo, jump, whole)

    @classmethod
    def whole(cls, image_hw: tuple[int, int]) -> Frame:
        """The whole image as the window (what mode ``"map"`` uses)."""
        return cls(tuple(image_hw), (0, 0), (0, 0), (True, True))

    def origins(self, position: torch.Tensor) -> torch.Tensor:
        """``(P, 2)`` corners of the windows of units at ``(P, 2)`` map positions ``(y, x)``."""
        lo = torch.tensor(self.lo, dtype=torch.int64)
        jump = torch.tensor(self.jump, dtype=torch.int64)
        return lo + position.to("cpu", torch.int64) * jump


def shift_crop(src: torch.Tensor, src_origin: torch.Tensor, dst_origin: torch.Tensor,
               size: tuple[int, int]) -> torch.Tensor:
    """Re-cut windows: ``(P, C, h, w)`` at corners ``src_origin`` -> ``(P, C, *size)`` at ``dst_origin``.

    Positions of the new window that the old one does not cover are zero; parts of the old one
    outside the new one are dropped. Corners are ``(P, 2)`` int64 in one coordinate system.
    """
    p, c, h, w = src.shape
    out_h, out_w = size
    offset = (src_origin - dst_origin).to(torch.int64)               # where each src corner lands
    if p == 0:
        return src.new_zeros(0, c, out_h, out_w)
    pad_top = max(0, -int(offset[:, 0].min()))
    pad_left = max(0, -int(offset[:, 1].min()))
    pad_bottom = max(0, int(offset[:, 0].max()) + h - out_h)
    pad_right = max(0, int(offset[:, 1].max()) + w - out_w)
    big = src.new_zeros(p, c, out_h + pad_top + pad_bottom, out_w + pad_left + pad_right)
    rows = (offset[:, 0:1] + pad_top + torch.arange(h)).view(p, h, 1)
    cols = (offset[:, 1:2] + pad_left + torch.arange(w)).view(p, 1, w)
    big[torch.arange(p).view(p, 1, 1), :, rows, cols] = src.permute(0, 2, 3, 1)
    return big[:, :, pad_top:pad_top + out_h, pad_left:pad_left + out_w].contiguous()


def place(out: torch.Tensor, rows: torch.Tensor, windows: torch.Tensor, offset: torch.Tensor) -> None:
    """Add ``(P, C, h, w)`` windows into ``out[rows]`` (``(Q, C, H, W)``, zero there), window ``i``
    with its corner at ``offset[i]`` ``(y, x)`` in ``out``'s coordinates; parts outside are dropped."""
    if len(rows) == 0:
        return
    h, w = windows.shape[-2:]
    height, width = out.shape[-2:]
    if bool((offset == offset[0]).all()):  # one offset for all: slicing
        oy, ox = offset[0].tolist()
        y0, x0, y1, x1 = max(oy, 0), max(ox, 0), min(oy + h, height), min(ox + w, width)
        if y1 > y0 and x1 > x0:
            out[rows, :, y0:y1, x0:x1] = windows[:, :, y0 - oy:y1 - oy, x0 - ox:x1 - ox]
        return
    out[rows] = shift_crop(windows, offset, torch.zeros_like(offset), (height, width))


def cut_windows(images: torch.Tensor, image_index: torch.Tensor, origins: torch.Tensor,
                size: tuple[int, int]) -> torch.Tensor:
    """``(P, C, *size)`` windows of ``(N, C, H, W)`` images, window ``i`` of image ``image_index[i]``
    with its corner at ``origins[i]`` ``(y, x)``; zero outside the image."""
    if len(image_index) == 0:
        return images.new_zeros(0, images.shape[1], *size)
    return gather_windows(images, image_index, origins, size[0], size[1])


class Deconvnet:
    """A batch of images after one forward pass, ready to project activations of ``layer``.

    Args:
        model (nn.Module): any convnet; run in eval mode (each module's flag is restored after).
        images (Tensor): ``(N, C, H, W)`` preprocessed inputs on the model's device.
        layer (str | nn.Module): the layer whose activations are projected.
        method (str): ``"auto"`` (default: the fast chain path when the model allows it, else
            autograd), ``"chain"`` (refuse other models) or ``"autograd"``.
        rule (str | Rule): the backward rule, default ``"deconvnet"``; e.g.
            ``RULES["deconvnet"].but(silu="gradient")`` to change one activation type's rule. The
            chain path runs only where it computes this rule (:meth:`Chain.follows`).

    Attributes:
        activations (Tensor): the layer's output, ``(N, C, h, w)`` (or ``(N, C)``), detached.
        method (str): the path used, ``"chain"`` or ``"autograd"``.
        name (str): the layer's canonical name.
        rule (Rule): the backward rule applied.
        activation_rules (dict[str, str]): the rule each activation type on the way down got
            (``{"ReLU6": "deconvnet", "SiLU": "deconvnet", "Sigmoid gate": "fixed"}``).

    Example:
        >>> net = Deconvnet(model, images, "conv5")
        >>> frame = Frame.of(layer_field(model, "conv5", images.shape[1:]), images.shape[-2:], "max")
        >>> windows, origins = net.windows(torch.tensor([0]), torch.tensor([17]), frame,
        ...                                position=torch.tensor([[3, 4]]))
        >>> windows.shape                     # the 139 x 139 receptive field of a ZFNet conv5 unit
        torch.Size([1, 3, 139, 139])
    """

    def __init__(self, model: nn.Module, images: torch.Tensor, layer, method: str = "auto", *,
                 rule: str | Rule = "deconvnet"):
        if method not in METHODS:
            raise IntrospectError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
        self.rule = resolve_rule(rule)
        self.activation_rules: dict[str, str] = {}
        self.model = model
        self.name, self.module = resolve_layer(model, layer)
        self.images = images
        self.image_hw = tuple(images.shape[-2:])
        self.chain: Chain | None = None
        self._x = None
        with eval_mode(model), readable_errors(images):
            if method in ("auto", "chain"):
                self.chain = trace_chain(model, images, self.module)
                if self.chain is not None and not self.chain.follows(self.rule):
                    if method == "chain":
                        raise IntrospectError(
                            f"the chain path computes the deconvnet rule, not rule {self.rule.name!r} as "
                            "changed; use method='autograd' (or 'auto')")
                    self.chain = None
                if self.chain is None and method == "chain":
                    raise IntrospectError(
                        f"layer {self.name!r} is not reached through a plain chain of Conv2d/activation/"
                        "MaxPool2d/LRN/BatchNorm2d/Dropout modules; use method='autograd' (or 'auto')"
                    )
            if self.chain is not None:
                self.activations = self.chain.activations
                self.activation_rules = self.chain.activation_rules()
                self.method = "chain"
            else:
                self._forward_autograd()
                self.method = "autograd"
        if self.activations.dim() not in (2, 4):
            raise IntrospectError(
                f"layer {self.name!r} gives {self.activations.dim()}-D output of shape "
                f"{tuple(self.activations.shape)}; choose a convolutional or fully connected layer"
            )

    def _forward_autograd(self) -> None:
        x = self.images.detach().clone().requires_grad_(True)
        with torch.enable_grad(), apply_rule(self.model, self.rule, seen=self.activation_rules), \
                attach(self.model, [self.name], detach=False) as rec:
            rec.forward(x, stop=True)
        if self.name not in rec.activations:
            raise IntrospectError(f"layer {self.name!r} did not run in the forward pass; choose another layer")
        self._x, self._act = x, rec.activations[self.name]
        if not self._act.requires_grad:
            raise IntrospectError(f"layer {self.name!r} does not depend on the input; choose another layer")
        self.activations = self._act.detach()

    # -- seeds -------------------------------------------------------------------------------------
    def _seed_values(self, image_index, channel, mode, position):
        """Per projection: the kept activations, rectified (a scalar, or the whole map)."""
        act = self.activations
        if mode == "map":
            return act[image_index, channel].clamp_min(0)
        if act.dim() == 2:
            return act[image_index, channel].clamp_min(0)
        return act[image_index, channel, position[:, 0], position[:, 1]].clamp_min(0)

    # -- projections -----------------------------------------------------------------------------
    def windows(self, image_index: torch.Tensor, channel: torch.Tensor, frame: Frame, *,
                mode: str = "max", position: torch.Tensor | None = None, out: torch.Tensor | None = None,
                out_index: torch.Tensor | None = None,
                seeds: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Project activations to the input, each kept in its window.

        Args:
            image_index (Tensor): ``(P,)`` int64, the image of the batch of each projection.
            channel (Tensor): ``(P,)`` int64, its feature map.
            frame (Frame): window geometry (:meth:`Frame.of`).
            mode (str): ``"max"``: only the activation at ``position`` is kept; ``"map"``: the
                whole map of ``channel`` (its positive part).
            position (Tensor | None): ``(P, 2)`` int64 map positions ``(y, x)`` for mode ``"max"``.
            out (Tensor | None): a zero-filled ``(Q, C_in, *frame.size)`` float32 CPU tensor to write
                projection ``i`` into, at row ``out_index[i]`` (default ``i``).
            out_index (Tensor | None): ``(P,)`` int64 rows of ``out``.
            seeds (Tensor | None): the values to project instead of the rectified activations:
                ``(P,)`` in mode ``"max"``, ``(P, h, w)`` in mode ``"map"``.

        Returns:
            tuple[Tensor, Tensor]: the ``(P, C_in, *frame.size)`` float32 projections on the CPU
            (or ``out``), zero outside the image, and their ``(P, 2)`` int64 corners in input pixels.
        """
        dev = self.activations.device
        image_index = image_index.to(dev, torch.int64)
        channel = channel.to(dev, torch.int64)
        if position is None:
            position = torch.zeros(len(channel), 2, dtype=torch.int64, device=dev)
        position = position.to(dev, torch.int64)
        origins = frame.origins(position) if mode == "max" else torch.zeros(len(channel), 2, dtype=torch.int64)
        if out is None:
            out = torch.zeros(len(channel), self.images.shape[1], *frame.size)
        rows_out = torch.arange(len(channel)) if out_index is None else out_index.to("cpu", torch.int64)
        if len(channel) == 0:
            return out, origins
        if seeds is None:
            seeds = self._seed_values(image_index, channel, mode, position)
        seeds = seeds.to(dev, self.activations.dtype)
        if self.chain is not None:
            self._chain_windows(image_index, channel, mode, position, seeds, frame, origins, out, rows_out)
        else:
            self._autograd_windows(image_index, channel, mode, position, seeds, frame, origins, out, rows_out)
        return out, origins

    def _chain_windows(self, image_index, channel, mode, position, seeds, frame, origins, out, rows_out):
        chain = self.chain
        c, h, w = self.activations.shape[1:]
        top = (h, w) if mode == "map" else (1, 1)
        chunk = max(1, min(512, CHAIN_BUDGET // chain.bytes_per_window(top)))
        corners = position if mode == "max" else torch.zeros_like(position)
        # neighbours in the order of how they are cut on the way down share most of their cuts;
        # batches of them keep both the work per window and the number of operations small
        plans = {}
        keys = []
        for y, x in corners.tolist():
            for axis, value in ((0, y), (1, x)):
                if (axis, value) not in plans:
                    plans[axis, value] = chain.crop_plan(value, top[axis], axis)
            keys.append((plans[0, y], plans[1, x]))
        order = torch.tensor(sorted(range(len(keys)), key=lambda i: (keys[i], i)), dtype=torch.int64)
        for start in range(0, len(order), chunk):
            rows = order[start:start + chunk]
            sel = rows.to(corners.device)
            top_windows = self.activations.new_zeros(len(rows), c, *top)
            batch = torch.arange(len(rows), device=top_windows.device)
            if mode == "map":
                top_windows[batch, channel[sel]] = seeds[sel]
            else:
                top_windows[batch, channel[sel], 0, 0] = seeds[sel]
            with torch.no_grad():
                down, corner = chain.walk(top_windows, corners[sel].clone(), image_index[sel])
            place(out, rows_out[rows], down.float().cpu(), corner.cpu() - origins[rows])

    def _autograd_windows(self, image_index, channel, mode, position, seeds, frame, origins, out, rows_out):
        act, n_images = self._act, self.activations.shape[0]
        p = len(channel)
        # slot s holds at most one projection per image: one batched backward gives them all
        slot = torch.zeros(p, dtype=torch.int64)
        counts: dict[int, int] = {}
        for i, n in enumerate(image_index.tolist()):
            slot[i] = counts.get(n, 0)
            counts[n] = slot[i].item() + 1
        n_slots = max(counts.values())
        per_pass = max(1, AUTOGRAD_BATCH // n_images)
        for first in range(0, n_slots, per_pass):
            chosen = [i for i in range(p) if first <= slot[i] < first + per_pass]
            k = min(per_pass, n_slots - first)
            grad_seeds = act.new_zeros(k, *act.shape)
            for i in chosen:
                s, n, ch = slot[i].item() - first, image_index[i], channel[i]
                if mode == "map" or act.dim() == 2:
                    grad_seeds[s, n, ch] = seeds[i]
                else:
                    grad_seeds[s, n, ch, position[i, 0], position[i, 1]] = seeds[i]
            grads = self._batched_grad(grad_seeds)
            chosen_t = torch.tensor(chosen, dtype=torch.int64)
            dense = grads[(slot[chosen_t] - first).to(grads.device), image_index[chosen_t.to(image_index.device)]]
            place(out, rows_out[chosen_t], dense.float().cpu(), -origins[chosen_t])

    def _batched_grad(self, grad_seeds: torch.Tensor) -> torch.Tensor:
        """``(K, N, C_in, H, W)`` input gradients for ``K`` seeds of the layer's output."""
        try:
            (grads,) = torch.autograd.grad(self._act, self._x, grad_seeds, retain_graph=True,
                                           is_grads_batched=True)
            return grads
        except RuntimeError as exc:  # an operation without a batching rule: one pass per seed
            if "out of memory" in str(exc).lower():
                raise
            return torch.stack([
                torch.autograd.grad(self._act, self._x, g, retain_graph=True)[0] for g in grad_seeds
            ])


def strongest(activations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and map: the strongest activation and its position (the first one on ties).

    Args:
        activations (Tensor): ``(N, C, h, w)`` or ``(N, C)``.

    Returns:
        tuple[Tensor, Tensor]: values ``(N, C)`` and positions ``(N, C, 2)`` int64 ``(y, x)``.
    """
    if activations.dim() == 2:
        return activations, torch.zeros(*activations.shape, 2, dtype=torch.int64, device=activations.device)
    n, c, h, w = activations.shape
    values, flat = activations.reshape(n, c, h * w).max(dim=2)
    return values, torch.stack([flat // w, flat % w], dim=-1)




def project_map(model: nn.Module, images: torch.Tensor, layer, channel: int, *, method: str = "auto",
                raw_if_negative: bool = False) -> torch.Tensor:
    """The deconvnet projection of feature map ``channel`` of ``layer``, whole, for each image.

    Args:
        model (nn.Module): any convnet (run in eval mode; flags restored after).
        images (Tensor): ``(N, C, H, W)`` preprocessed inputs on the model's device.
        layer (str | nn.Module): the layer, by name, alias or module.
        channel (int): the feature map.
        method (str): ``"auto"``, ``"chain"`` or ``"autograd"`` (see :class:`Deconvnet`).
        raw_if_negative (bool): project the raw map of an image whose map has no positive value
            (by default such a map projects to zero, as the deconvnet's input is rectified).

    Returns:
        Tensor: ``(N, C, H, W)`` float32 projections on the CPU.

    Example:
        >>> picture = project_map(model, image, "conv5", 17)[0]     # 3 x H x W
    """
    net = Deconvnet(model, images, layer, method=method)
    n = images.shape[0]
    index = torch.arange(n)
    maps = net.activations[:, channel]
    seeds = maps.clamp_min(0)
    if raw_if_negative:
        empty = (maps > 0).reshape(n, -1).sum(1) == 0
        seeds = torch.where(empty.view(-1, *[1] * (maps.dim() - 1)), maps, seeds)
    out, _ = net.windows(index, torch.full((n,), int(channel), dtype=torch.int64), Frame.whole(net.image_hw),
                         mode="map", seeds=seeds)
    return out


def layer_field(model: nn.Module, layer, input_size) -> Field:
    """The receptive :class:`Field` of ``layer`` for inputs of ``input_size`` ``(C, H, W)``.

    :func:`introspect.core.receptive_field` with ``stop=True`` (the traced forward pass stops at the
    layer, so layers above it, e.g. a classifier sized for another input, need not accept the input),
    in eval mode, with a model that cannot run on the input reported in one line.
    """
    with eval_mode(model), readable_errors(torch.empty(1, *input_size)):  # flags restored afterwards
        return receptive_field(model, layer, tuple(input_size), stop=True)


__all__ = ["Deconvnet", "Frame", "MODES", "METHODS", "cut_windows", "layer_field", "place", "project_map",
           "readable_errors", "shift_crop", "strongest"]
