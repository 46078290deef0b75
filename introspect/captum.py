"""Drop-in replacements for captum's ``Occlusion``, ``NeuronDeconvolution``, ``Deconvolution`` and
``GuidedBackprop``, backed by introspect's fast paths.

Change one import::

    from introspect.captum import Occlusion          # instead of: from captum.attr import Occlusion

Each class subclasses captum's own (so it is a ``captum.attr.Attribution`` that ``NoiseTunnel``,
``captum.metrics.infidelity``/``sensitivity_max`` and ``captum.attr.visualization`` accept), keeps
its constructor, its ``attribute()`` signature and defaults, and gives the same output shapes and
values. After each call ``instance.last_path`` names the path that ran.

Which inputs take which path:

``Occlusion``
    **Fast** (``last_path`` ``"incremental"``, ``"full"`` or ``"mixed"``) when ``forward_func`` is an
    ``nn.Module`` with every module in eval mode, ``inputs`` is one 4-D tensor ``N x C x H x W`` (or a
    1-tuple of it), ``additional_forward_args`` is ``None``, and the output selected by ``target`` is
    one number per example. Every sliding window (any channel extent, captum's extra clipped window at
    the end of an axis included), scalar or tensor baselines, every form of ``target``,
    ``perturbations_per_eval`` and ``show_progress`` are handled. Each image's sweep runs through the
    occlusion cost model (:mod:`introspect.core.sweep`): incremental inference where the model traces
    with ``torch.fx`` and recomputing only the changed windows pays, batched whole forward passes
    otherwise (``"mixed"``: both were timed on a few positions; an instance keeps what it measured
    for the next images and calls of the same geometry), whole passes in channels-last layout for
    float32 on the CPU, where oneDNN's convolutions run fastest. **captum** (``"captum"``) for
    everything else: tuples of several inputs, inputs that are not 4-D, additional forward
    arguments, plain functions, models in training mode, outputs with several numbers per example.

``NeuronDeconvolution``
    **Fast** (``"chain"``) when the layer is reached from one 4-D input through a plain chain of
    ``Conv2d``, ``ReLU``, ``MaxPool2d``, ``BatchNorm2d``, ``Dropout`` and ``Identity`` modules (ZFNet
    without LRN, VGG's ``features``), the model is in eval mode, ``neuron_selector`` is a tuple of
    three ints ``(channel, y, x)``, there are no additional forward arguments and
    ``attribute_to_neuron_input`` is ``False``: the windowed deconvnet walk of
    :mod:`introspect.core.chain`, over the unit's receptive field only. The forward pass (with its
    max-pool switches) is kept and reused while the same input tensor, unchanged, comes back with the
    chain's parameters unchanged: a loop over the neurons of one image runs one forward pass. The
    walk's top steps, above the first max pool, do not depend on the image: their result is kept per
    channel and cut pattern and serves later calls for every image. **captum** for
    everything else (local response normalization, whose gradient captum takes and the deconvnet
    does not, residual models, functional ReLUs, slices or callables as selectors).

``Deconvolution``, ``GuidedBackprop``
    Always **captum** (``"captum"``): one backward pass of the whole network is what both compute,
    and there is no cheaper exact way; they are here so that all four come from one import.

Speed and memory: the fast occlusion runs under ``torch.no_grad()`` and chooses its own batches
(``perturbations_per_eval`` bounds the batch of whole passes when larger than 1; the incremental
path fits about 512 MB of windows per batch). Values equal captum's to float rounding; captum
accumulates in the output's dtype, the fast path in float64, and both return float32 as captum does.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from captum._utils.common import (
    _expand_target,
    _format_output,
    _format_tensor_into_tuples,
    _is_tuple,
    _run_forward,
    _select_targets,
)
from captum._utils.progress import NullProgress, progress
from captum.attr import Deconvolution as _CaptumDeconvolution
from captum.attr import GuidedBackprop as _CaptumGuidedBackprop
from captum.attr import NeuronDeconvolution as _CaptumNeuronDeconvolution
from captum.attr import Occlusion as _CaptumOcclusion
from captum.attr._utils.common import (
    _format_and_verify_sliding_window_shapes,
    _format_and_verify_strides,
    _format_input_baseline,
)
from captum.log import log_usage
from torch import nn

from introspect.core.sweep import Sweep, SweepRunner, prepare_engine, sweep_geometry

#: Positions per batch of whole forward passes when ``perturbations_per_eval`` is 1.
FULL_BATCH = 32
#: Modules of a chain whose deconvnet walk is what captum's ``Deconvolution`` computes through them.
_CAPTUM_CHAIN = (nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.BatchNorm2d, nn.Dropout, nn.Identity)


def _in_eval_mode(model) -> bool:
    return isinstance(model, nn.Module) and not any(m.training for m in model.modules())


class Occlusion(_CaptumOcclusion):
    r"""captum's ``Occlusion`` (same constructor, ``attribute()`` and results), with incremental
    inference for 4-D images on models in eval mode; see :mod:`introspect.captum` for which inputs
    take the fast path. ``last_path`` is ``"incremental"``, ``"full"``, ``"mixed"`` (both ran during
    the call) or ``"captum"`` after a call, and ``last_stats`` holds the cost model's figures of the
    last image (fast path). The cost model measures a geometry once per instance: later images and
    calls with the same image size and windows take the measured path without probing again.

    Example::

        >>> from introspect.captum import Occlusion
        >>> occ = Occlusion(model.eval())
        >>> attr = occ.attribute(images, sliding_window_shapes=(3, 32, 32), strides=(3, 16, 16),
        ...                      target=3, baselines=0)
        >>> occ.last_path
        'incremental'
    """

    def __init__(self, forward_func: Callable[..., torch.Tensor]) -> None:
        super().__init__(forward_func)
        self.last_path: str | None = None
        self.last_stats: dict = {}
        self._decisions: dict = {}  # the cost model's measured choices, per geometry

    @log_usage(part_of_slo=True)
    def attribute(
        self,
        inputs,
        sliding_window_shapes,
        strides=None,
        baselines=None,
        target=None,
        additional_forward_args: object | None = None,
        perturbations_per_eval: int = 1,
        show_progress: bool = False,
    ):
        r"""Occlusion attributions, exactly as :meth:`captum.attr.Occlusion.attribute` defines them:
        each window (hyperrectangle over ``C x H x W``) is replaced by the baseline, the change of the
        target output is credited to every feature in it, and each feature's credits are averaged
        over the windows that cover it.

        Args:
            inputs (Tensor | tuple[Tensor, ...]): ``N x C x H x W`` images (other shapes and several
                tensors go to captum).
            sliding_window_shapes (tuple[int, ...] | tuple[tuple[int, ...], ...]): window shape per
                input, ``(C', h, w)`` for an image.
            strides (int | tuple | None): step per dimension; default 1.
            baselines (scalar | Tensor | tuple | None): what a window holds; default 0.
            target (int | tuple | Tensor | list | None): the output index per example (captum's forms).
            additional_forward_args (Any): extra arguments of ``forward_func`` (captum's path).
            perturbations_per_eval (int): captum: windows per forward call; fast path: the batch of
                whole passes when larger than 1 (the incremental path sizes its own batches).
            show_progress (bool): a progress bar (captum's).

        Returns:
            Tensor | tuple[Tensor, ...]: float32 attributions shaped like ``inputs``.
        """
        fast = self._fast_inputs(inputs, additional_forward_args)
        if fast is not None:
            out = self._attribute_fast(fast, inputs, sliding_window_shapes, strides, baselines, target,
                                       perturbations_per_eval, show_progress)
            if out is not None:
                return out
        self.last_path = "captum"
        return super().attribute.__wrapped__(
            self, inputs, sliding_window_shapes, strides, baselines, target, additional_forward_args,
            perturbations_per_eval, show_progress)

    def _fast_inputs(self, inputs, additional_forward_args) -> torch.Tensor | None:
        if additional_forward_args is not None or not _in_eval_mode(self.forward_func):
            return None
        formatted = _format_tensor_into_tuples(inputs)
        if len(formatted) != 1:
            return None
        x = formatted[0]
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point() or x.shape[0] == 0:
            return None
        return x

    def _attribute_fast(self, x, inputs, sliding_window_shapes, strides, baselines, target, ppe, show_progress):
        formatted = (x,)
        strides = _format_and_verify_strides(strides, formatted)
        windows = _format_and_verify_sliding_window_shapes(sliding_window_shapes, formatted)
        assert isinstance(ppe, int) and ppe >= 1, "Perturbations per evaluation must be an integer and at least 1."
        corners = window_corners(x.shape[1:], windows[0], strides[0])
        _, formatted_baselines = _format_input_baseline(inputs, baselines)
        baseline = torch.broadcast_to(torch.as_tensor(formatted_baselines[0], dtype=x.dtype, device=x.device),
                                      x.shape)
        n = x.shape[0]
        with torch.no_grad():
            initial = _run_forward(self.forward_func, formatted, target, None)
            if not isinstance(initial, torch.Tensor) or initial.numel() != n:
                return None  # not one number per example: captum's general bookkeeping
            bar = progress(desc=f"{self.get_name()} attribution", total=n + 1) if show_progress else NullProgress()
            bar.update(0)
            bar.update()
            outputs = []
            self._paths: set[str] = set()
            for i in range(n):
                outputs.append(self._sweep(x[i:i + 1], baseline[i], corners, windows[0], ppe))
                bar.update()
            bar.close()
            outs = torch.stack(outputs, 1)  # P x N x ...: captum's layout of expanded batches
            p = outs.shape[0]
            modified = _select_targets(outs.reshape(p * n, *outs.shape[2:]), _expand_target(target, p))
            if modified.numel() != p * n:
                return None
            diff = initial.reshape(1, n).to(torch.float64) - modified.reshape(p, n).to(torch.float64)
            total, weight = accumulate(diff, corners, windows[0], x.shape)
        self.last_path = self._paths.pop() if len(self._paths) == 1 else "mixed"
        return _format_output(_is_tuple(inputs), ((total / weight).float(),))

    def _sweep(self, image, baseline, corners, window, ppe) -> torch.Tensor:
        """The model's outputs for every window of one image (``P x ...``), by the cost model."""
        model = self.forward_func
        logits = model(image)
        sweep = box_sweep(image, baseline, corners, window)
        full_batch = ppe if ppe > 1 else FULL_BATCH
        known = self._decisions.get(sweep_geometry(image, sweep, full_batch_size=full_batch))
        engine, fallback = (None, None)
        if isinstance(logits, torch.Tensor) and (known is None or known[0] != "full"):
            engine, fallback = prepare_engine(model, image, logits)  # not needed where whole passes won
        runner = SweepRunner(model, image, image, sweep, engine, full_batch_size=full_batch,
                             decisions=self._decisions)
        out = runner.run("auto")
        self._paths.add(runner.path)
        self.last_stats = {**runner.stats, "path": runner.path, "chosen": runner.chosen, "fallback": fallback}
        return out


def window_corners(shape, window, stride) -> np.ndarray:
    """``P x 3`` first index of every window along ``(C, H, W)``, in captum's order (channel fastest),
    with captum's counts ``ceil((size - window) / stride) + 1`` (the last window may be clipped)."""
    current = np.subtract(shape, window)
    assert (np.array(current) >= 0).all(), (
        f"Sliding window dimensions {window} cannot exceed input dimensions{tuple(shape)}.")
    assert np.logical_or(np.array(current) == 0, np.array(stride) <= window).all(), (
        f"Stride dimension {stride} cannot be larger than sliding window shape dimension {window}.")
    stride = stride if isinstance(stride, tuple) else (stride,) * len(shape)
    counts = np.add(np.ceil(np.divide(current, stride)).astype(int), 1)
    grids = np.meshgrid(*[np.arange(c) * s for c, s in zip(counts, stride)], indexing="ij")
    # captum numbers windows with the first dimension varying fastest
    return np.stack([g.transpose(tuple(range(len(shape)))[::-1]).reshape(-1) for g in grids], 1)


def box_sweep(image, baseline, corners, window) -> Sweep:
    """One box per window, all of the window's spatial size (shifted inwards where captum's window is
    clipped at the end of an axis), holding the image with the window's part set to the baseline."""
    _, c, h, w = image.shape
    wc, wh, ww = (min(a, b) for a, b in zip(window, (c, h, w)))
    cs, ys, xs = (torch.as_tensor(corners[:, k], dtype=torch.int64) for k in range(3))
    by, bx = ys.clamp(max=h - wh), xs.clamp(max=w - ww)
    patches = torch.empty(len(cs), c, wh, ww, dtype=image.dtype, device=image.device)
    for i, (c0, y0, x0, oy, ox) in enumerate(zip(cs.tolist(), ys.tolist(), xs.tolist(), by.tolist(), bx.tolist())):
        patches[i] = image[0, :, oy:oy + wh, ox:ox + ww]
        patches[i, c0:c0 + wc, y0 - oy:y0 - oy + wh, x0 - ox:x0 - ox + ww] = \
            baseline[c0:c0 + wc, y0:y0 + wh, x0:x0 + ww]
    dev = image.device
    return Sweep(by.to(dev), bx.to(dev), (wh, ww), patches)


def accumulate(diff: torch.Tensor, corners, window, shape) -> tuple[torch.Tensor, torch.Tensor]:
    """Each window's output change (``diff``: ``P x N``) credited to its features: the ``N x C x H x W``
    totals and the number of windows covering each feature (``C x H x W``)."""
    n, c, h, w = shape
    total = torch.zeros(n, c, h, w, dtype=torch.float64, device=diff.device)
    weight = torch.zeros(c, h, w, dtype=torch.float64, device=diff.device)
    wc, wh, ww = window
    for i, (c0, y0, x0) in enumerate(corners.tolist()):
        total[:, c0:c0 + wc, y0:y0 + wh, x0:x0 + ww] += diff[i].view(n, 1, 1, 1)
        weight[c0:c0 + wc, y0:y0 + wh, x0:x0 + ww] += 1
    return total, weight


# --------------------------------------------------------------------------------------------------
# deconvnet family
# --------------------------------------------------------------------------------------------------
class NeuronDeconvolution(_CaptumNeuronDeconvolution):
    r"""captum's ``NeuronDeconvolution`` (same constructor, ``attribute()`` and results), with the
    windowed deconvnet walk for plain chains of layers; see :mod:`introspect.captum`. ``last_path``
    is ``"chain"`` or ``"captum"`` after a call.

    Example::

        >>> from introspect.captum import NeuronDeconvolution
        >>> nd = NeuronDeconvolution(zfnet.eval(), zfnet.features[12])
        >>> for c, y, x in neurons:                       # one forward pass for all of them
        ...     maps.append(nd.attribute(image, neuron_selector=(c, y, x)))
    """

    #: Walks of the image-free top steps kept (one per channel and cut pattern; oldest dropped first).
    KEEP = 1024

    def __init__(self, model: nn.Module, layer: nn.Module, device_ids=None) -> None:
        super().__init__(model, layer, device_ids)
        self.last_path: str | None = None
        self._cached: tuple | None = None
        self._image_free: tuple[tuple | None, dict] = (None, {})

    @log_usage(part_of_slo=True)
    def attribute(
        self,
        inputs,
        neuron_selector,
        additional_forward_args: object | None = None,
        attribute_to_neuron_input: bool = False,
    ):
        r"""The deconvnet projection of one neuron of ``layer`` for every example, as
        :meth:`captum.attr.NeuronDeconvolution.attribute` computes it (the gradient of the neuron
        with ReLUs passing the rectified gradient).

        Args:
            inputs (Tensor | tuple[Tensor, ...]): ``N x C x H x W`` images (anything else: captum).
            neuron_selector (int | tuple | callable): the neuron; ``(channel, y, x)`` takes the fast path.
            additional_forward_args (Any): extra arguments of the model (captum's path).
            attribute_to_neuron_input (bool): captum's path when ``True``.

        Returns:
            Tensor | tuple[Tensor, ...]: attributions shaped like ``inputs``.
        """
        out = None
        if additional_forward_args is None and not attribute_to_neuron_input:
            out = self._attribute_chain(inputs, neuron_selector)
        if out is not None:
            self.last_path = "chain"
            return out
        self.last_path = "captum"
        return super().attribute.__wrapped__(self, inputs, neuron_selector, additional_forward_args,
                                             attribute_to_neuron_input)

    def _chain(self, x: torch.Tensor):
        """The traced chain of ``x`` (kept while ``x`` and the parameters are unchanged), or ``None``."""
        from introspect.core.chain import trace_chain

        key = (x.shape, x.dtype, x.device)
        if (self._cached is not None and self._cached[0] == key and torch.equal(self._cached[1], x)
                and (self._cached[2] is None or self._cached[2].state_versions() == self._cached[3])):
            return self._cached[2]
        chain = trace_chain(self.forward_func, x.detach(), self.layer)
        if chain is not None and not all(type(s.module) in _CAPTUM_CHAIN for s in chain.steps):
            chain = None  # captum rectifies at nn.ReLU only and differentiates everything else (LRN)
        self._cached = (key, x.detach().clone(), chain, None if chain is None else chain.state_versions())
        return chain

    def _image_free_walk(self, chain, c: int, y: int, x: int):
        """``(window, origin, depth)``: the walk of the one-hot neuron ``(c, y, x)`` down the
        ``depth`` steps above the first max pool. Those steps do not depend on the image, only on
        the channel and on how the window is cut to each map, so each (channel, cuts) is walked
        once and kept while the parameters stay unchanged (a neuron away from the borders of its
        map is cut like every other one)."""
        act = chain.activations
        depth = chain.image_free_depth
        steps = list(reversed(chain.steps))[:depth]
        cuts = sum(s.kind == "conv" for s in steps)
        stamp = (tuple(id(s.module) for s in chain.steps), chain.state_versions(), act.dtype, act.device,
                 chain.input_hw)
        if self._image_free[0] != stamp:
            self._image_free = (stamp, {})
        kept = self._image_free[1]
        key = (c, chain.crop_plan(y, 1, 0)[:cuts], chain.crop_plan(x, 1, 1)[:cuts])
        scale = torch.ones(2, dtype=torch.int64, device=act.device)
        for s in steps:
            scale *= torch.tensor(s.stride, dtype=torch.int64, device=act.device)
        here = torch.tensor([[y, x]], dtype=torch.int64, device=act.device)
        if key not in kept:
            if len(kept) >= self.KEEP:
                kept.pop(next(iter(kept)))
            top = act.new_zeros(1, act.shape[1], 1, 1)
            top[:, c] = 1
            window, origin = chain.walk(top, here, torch.zeros(1, dtype=torch.int64, device=act.device), stop=depth)
            kept[key] = (window, origin - here * scale)
        window, shift = kept[key]
        return window, here * scale + shift, depth

    def _attribute_chain(self, inputs, selector):
        if not (isinstance(selector, tuple) and len(selector) == 3
                and all(isinstance(v, int) and not isinstance(v, bool) for v in selector)):
            return None
        formatted = _format_tensor_into_tuples(inputs)
        if len(formatted) != 1 or not _in_eval_mode(self.forward_func):
            return None
        x = formatted[0]
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
            return None
        chain = self._chain(x)
        if chain is None:
            return None
        act = chain.activations
        if not all(-s <= v < s for v, s in zip(selector, act.shape[1:])):
            return None  # outside the layer: captum raises its own error
        n = x.shape[0]
        c, y, x0 = (v % s for v, s in zip(selector, act.shape[1:]))  # negative indices as captum reads them
        with torch.no_grad():
            window, origin, depth = self._image_free_walk(chain, c, y, x0)
            down, corner = chain.walk(window.expand(n, *window.shape[1:]).clone(), origin.expand(n, 2).clone(),
                                      torch.arange(n, device=act.device), start=depth)
        out = torch.zeros_like(x)
        h, w = down.shape[-2:]
        for i, (oy, ox) in enumerate(corner.tolist()):
            out[i, :, oy:oy + h, ox:ox + w] = down[i, :, :max(0, x.shape[2] - oy), :max(0, x.shape[3] - ox)]
        return _format_output(_is_tuple(inputs), (out,))


class _AsCaptum:
    """captum's ``attribute`` run as it is, with ``last_path`` ``"captum"``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)  # type: ignore[call-arg]
        self.last_path: str | None = None

    @log_usage(part_of_slo=True)
    def attribute(self, inputs, target=None, additional_forward_args: Any | None = None):
        """See captum's ``attribute`` of the same class."""
        self.last_path = "captum"
        return super().attribute.__wrapped__(self, inputs, target, additional_forward_args)  # type: ignore[misc]


class Deconvolution(_AsCaptum, _CaptumDeconvolution):
    r"""captum's ``Deconvolution``, unchanged (``last_path`` ``"captum"``): one backward pass of the
    whole network with ReLUs passing the rectified gradient. Here so that all four drop-ins come
    from one import."""


class GuidedBackprop(_AsCaptum, _CaptumGuidedBackprop):
    r"""captum's ``GuidedBackprop``, unchanged (``last_path`` ``"captum"``). Here so that all four
    drop-ins come from one import."""


__all__ = ["Occlusion", "NeuronDeconvolution", "Deconvolution", "GuidedBackprop"]
