"""``first_layer_filters(model, dataset)``: the first layer's filters, dead filters and aliasing (Fig. 6).

Zeiler & Fergus (Sec. 4.1, Fig. 6) looked at the first-layer filters of Krizhevsky's network and saw
two problems: a mix of extremely high and low frequencies with dead filters, and aliasing artifacts
caused by the large stride 4; they went to 7x7 filters at stride 2. This module measures both
symptoms for any ``nn.Conv2d``: which filters are dead (never active over a data set, or of negligible
norm), how much of each filter's energy is at high frequencies, and how much lies above the Nyquist
frequency of the layer's stride (see :mod:`introspect_filters.spectrum` for the exact definitions).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from introspect.plugin import (
    IntrospectError,
    Progress,
    Shown,
    alias_of,
    attach,
    dataset_batches,
    dataset_size,
    eval_mode,
    model_device,
    notebook_progress,
    readable_errors,
    report_progress,
    resolve_layer,
    short_list,
)
from introspect_filters.defaults import NORM_FRACTION  # noqa: E402  (dead-filter norm threshold)
from introspect_filters.spectrum import (
    HF_CUTOFF,
    aliasing_mask,
    band_fraction,
    frequencies,
    grid_size,
    high_frequency_mask,
    power_spectrum,
)

NEVER_ACTIVE, NEGLIGIBLE_NORM = "never active", "negligible norm"

# --------------------------------------------------------------------------------------------------
# the result
# --------------------------------------------------------------------------------------------------
@dataclass(repr=False)
class FiltersResult(Shown):
    """The filters of one convolution and the symptoms of Fig. 6, as CPU tensors.

    Attributes:
        layer (str): the module name (``features.0``); ``alias`` its paper name (``conv1``) if any.
        kernel_size, stride (tuple[int, int]): of the convolution (rows, columns).
        weights (Tensor): ``(C_out, C_in, kh, kw)`` the filters (float32); ``bias`` ``(C_out,)`` or None.
        norm (Tensor): ``(C_out,)`` Euclidean norm of each filter (over all its input channels).
        max_activation (Tensor | None): ``(C_out,)`` the largest output of each filter (bias included,
            before any ReLU) over every position of every image; None without a data set.
        dead (Tensor): ``(C_out,)`` bool; ``reasons`` the reason per filter (``""`` when alive,
            ``"negligible norm"``, ``"never active"`` or both joined by ``" and "``).
        high_frequency (Tensor): ``(C_out,)`` fraction of spectral energy above ``hf_cutoff``.
        aliasing (Tensor): ``(C_out,)`` fraction above the stride's Nyquist frequency ``nyquist``.
        spectrum (Tensor): ``(C_out, Ph, Pw)`` power spectra, shifted so DC is at the centre
            (``torch.fft.fftshift``); ``freq_y``, ``freq_x`` (Tensor) the matching frequencies.
        hf_cutoff (float), norm_fraction (float): the thresholds used.
        nyquist (tuple[float, float]): ``1 / (2 * stride)`` per axis, in cycles per pixel.
        images_seen (int): images streamed (0 without a data set).
    """

    layer: str
    alias: str | None
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    weights: torch.Tensor
    bias: torch.Tensor | None
    norm: torch.Tensor
    max_activation: torch.Tensor | None
    dead: torch.Tensor
    reasons: list[str]
    high_frequency: torch.Tensor
    aliasing: torch.Tensor
    spectrum: torch.Tensor
    freq_y: torch.Tensor
    freq_x: torch.Tensor
    hf_cutoff: float = HF_CUTOFF
    norm_fraction: float = NORM_FRACTION
    nyquist: tuple[float, float] = (0.25, 0.25)
    images_seen: int = 0
    stats: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The layer as people call it: its alias when it has one, else its module name."""
        return self.alias or self.layer

    @property
    def dead_count(self) -> int:
        return int(self.dead.sum())

    @property
    def mean_high_frequency(self) -> float:
        return float(self.high_frequency.mean())

    @property
    def mean_aliasing(self) -> float:
        return float(self.aliasing.mean())

    def _repr_lines(self) -> list[str]:
        c_out, c_in, kh, kw = self.weights.shape
        seen = f", {self.images_seen} images seen" if self.images_seen else ", no data set"
        return [f"FiltersResult: {self.name} {c_out} filters of {c_in}x{kh}x{kw}, stride "
                f"{self.stride[0]}{seen}",
                f"  dead: {self.dead_count} ({short_list([i for i, d in enumerate(self.dead.tolist()) if d])})"
                if self.dead_count else "  dead: 0",
                f"  mean high-frequency energy {self.mean_high_frequency:.3f}, above Nyquist (aliasing) "
                f"{self.mean_aliasing:.3f}"]

    def _figures(self) -> dict:
        from introspect_filters.figure import filters_picture, spectrum_picture

        return {"filters": lambda: filters_picture(self), "spectrum": lambda: spectrum_picture(self)}

    def rows(self) -> list[dict]:
        """One dict per filter: index, norm, max_activation, dead, reason, high_frequency, aliasing."""
        act = self.max_activation
        return [{"index": i, "norm": float(self.norm[i]), "max_activation": None if act is None else float(act[i]),
                 "dead": bool(self.dead[i]), "reason": self.reasons[i],
                 "high_frequency": float(self.high_frequency[i]), "aliasing": float(self.aliasing[i])}
                for i in range(len(self.norm))]

    def to_dict(self) -> dict:
        """A JSON-ready summary: the layer, thresholds, summary numbers and one row per filter."""
        live = ~self.dead
        return {
            "method": "filters", "layer": self.layer, "alias": self.alias,
            "filters": int(self.weights.shape[0]), "in_channels": int(self.weights.shape[1]),
            "kernel_size": list(self.kernel_size), "stride": list(self.stride), "nyquist": list(self.nyquist),
            "hf_cutoff": self.hf_cutoff, "norm_fraction": self.norm_fraction, "images_seen": self.images_seen,
            "spectrum_size": list(self.spectrum.shape[-2:]),
            "dead_count": self.dead_count,
            "never_active": sum(NEVER_ACTIVE in r for r in self.reasons),
            "negligible_norm": sum(NEGLIGIBLE_NORM in r for r in self.reasons),
            "dead_filters": [i for i, d in enumerate(self.dead.tolist()) if d],
            "mean_high_frequency": self.mean_high_frequency, "mean_aliasing": self.mean_aliasing,
            "mean_high_frequency_live": float(self.high_frequency[live].mean()) if live.any() else None,
            "mean_aliasing_live": float(self.aliasing[live].mean()) if live.any() else None,
            "median_norm": median(self.norm),
            "per_filter": self.rows(), "stats": self.stats,
        }

    def csv_text(self) -> str:
        """``report.csv``: a header and one row per filter (empty ``max_activation`` without data)."""
        from introspect.plugin import csv_text

        columns = ["index", "norm", "max_activation", "dead", "reason", "high_frequency", "aliasing"]
        return csv_text([{k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()}
                         for row in self.rows()], columns)

    def save(self, out) -> list[Path]:
        """Write ``filters.png``, ``spectrum.png``, ``filters.npy``, ``report.csv`` and ``result.json``.

        ``filters.npy`` holds the weights ``(C_out, C_in, kh, kw)``; ``spectrum.npy`` the shifted power
        spectra ``(C_out, Ph, Pw)``. Nothing is written on error. ``out`` may be an open
        :class:`introspect.output.OutputDir`.

        Returns:
            list[Path]: the files written.
        """
        from introspect.plugin import output_folder, written

        with output_folder(out) as od:
            names = self._write(od)
        return written(od, names)

    def _write(self, od) -> list[str]:
        from introspect_filters.figure import filters_picture, spectrum_picture

        od.save_png("filters.png", filters_picture(self))
        od.save_png("spectrum.png", spectrum_picture(self))
        od.save_npy("filters.npy", self.weights)
        od.save_npy("spectrum.npy", self.spectrum)
        od.save_text("report.csv", self.csv_text())
        od.save_json("result.json", self.to_dict())
        return ["filters.png", "spectrum.png", "filters.npy", "spectrum.npy", "report.csv", "result.json"]


# --------------------------------------------------------------------------------------------------
# the data set pass
# --------------------------------------------------------------------------------------------------
def max_activation(model: nn.Module, layer: str, dataset, batch_size: int = 64,
                   progress: Progress | None = None) -> tuple[torch.Tensor, int]:
    """The largest output of each feature map of ``layer`` over every position of every image.

    Streams ``dataset`` in batches (a forward pass stopped at ``layer``, no gradients, eval mode,
    the model's flags restored), keeping only a running maximum per map.

    Returns:
        tuple[Tensor, int]: ``(C_out,)`` float32 maxima (on the CPU) and the number of images.
    """
    total = dataset_size(dataset)
    if total == 0:
        raise IntrospectError("the data set is empty; add images or leave the data out")
    device = model_device(model)
    best, seen = None, 0
    with eval_mode(model), torch.no_grad(), attach(model, [layer]) as rec:
        for x in dataset_batches(dataset, batch_size):
            with readable_errors(x):
                rec.forward(x.to(device), stop=True)
            act = rec.activations[layer]
            peak = act.transpose(0, 1).reshape(act.shape[1], -1).amax(1).float().cpu()
            best = peak if best is None else torch.maximum(best, peak)
            seen += len(x)
            report_progress(progress, "images", seen, total)
    return best, seen


# --------------------------------------------------------------------------------------------------
# the method
# --------------------------------------------------------------------------------------------------
def first_conv_layer(model: nn.Module) -> str:
    """The name of the first ``nn.Conv2d`` of ``model`` (the default layer)."""
    name = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if name is None:
        raise IntrospectError("the model has no Conv2d layer; this analysis needs a convolutional first layer")
    return name


def resolve_conv(model: nn.Module, layer) -> tuple[str, nn.Conv2d]:
    """``(name, module)`` of ``layer`` (default the first Conv2d); IntrospectError unless an undilated Conv2d."""
    name, module = resolve_layer(model, layer if layer is not None else first_conv_layer(model))
    if not isinstance(module, nn.Conv2d):
        raise IntrospectError(f"layer {name!r} is a {type(module).__name__}, not a convolution; "
                              "pass a Conv2d layer (e.g. conv1); `introspect layers` lists them")
    if tuple(module.dilation) != (1, 1):
        raise IntrospectError(f"layer {name!r} is dilated {tuple(module.dilation)}; the spectrum needs taps one "
                              "pixel apart, so pass an undilated Conv2d")
    return name, module


def median(values: torch.Tensor) -> float:
    """The median, the mean of the two middle values for an even count (as ``numpy.median``)."""
    return float(torch.quantile(values.double(), 0.5))


def dead_reasons(norm: torch.Tensor, peak: torch.Tensor | None, norm_fraction: float = NORM_FRACTION) -> list[str]:
    """Why each filter is dead: ``"negligible norm"`` (norm below ``norm_fraction`` times the
    :func:`median` norm, or zero), ``"never active"`` (largest output over the data set <= 0), both, or ``""``."""
    limit = norm_fraction * median(norm)
    reasons = []
    for i, n in enumerate(norm.tolist()):
        why = [NEGLIGIBLE_NORM] if (n < limit or n == 0) else []
        if peak is not None and float(peak[i]) <= 0:
            why.append(NEVER_ACTIVE)
        reasons.append(" and ".join(why))
    return reasons


@notebook_progress
def first_layer_filters(model: nn.Module, dataset=None, *, layer: str | nn.Module | None = None,
                        batch_size: int = 64, hf_cutoff: float = HF_CUTOFF, norm_fraction: float = NORM_FRACTION,
                        fft_size: int | tuple[int, int] | None = None,
                        progress: Progress | None = None) -> FiltersResult:
    """The filters of a convolution (default: the first), their dead filters and aliasing (Fig. 6).

    Args:
        model (nn.Module): any convnet; it is not modified (eval mode during the data pass, each
            module's flag restored afterwards).
        dataset: images preprocessed for the model: an ``(N, C, H, W)`` tensor, or a map-style data set
            giving image tensors or ``(image, label)`` pairs (e.g.
            :class:`introspect.images.ImageFolderDataset`). Streamed in batches; only a running maximum
            per filter is kept. Default None: no activations (dead only by norm).
        layer (str | nn.Module | None): a ``Conv2d`` by name, alias (``conv1``) or module; default the
            first ``Conv2d`` of the model.
        batch_size (int): images per forward pass (default 64).
        hf_cutoff (float): high-frequency cutoff, in cycles per pixel in ``(0, 0.5)`` (default 0.25).
        norm_fraction (float): a filter is dead by norm below this fraction of the median filter
            norm (default 0.05).
        fft_size (int | tuple[int, int] | None): DFT grid; default the kernel size (see
            :mod:`introspect_filters.spectrum`).
        progress (Progress | None): ``progress("images", images_done, images_total)`` after each batch.

    Returns:
        FiltersResult: weights, norms, maxima, dead filters with reasons, high-frequency and aliasing
        energy per filter, spectra, and the summary numbers.

    Raises:
        IntrospectError: the layer is not a ``Conv2d`` or has NaN/infinite weights, the data set is empty,
            the images do not fit the model, or a threshold or ``fft_size`` is out of range (checked
            before the data pass).

    Example:
        >>> from introspect.cli import bundled_image_dir
        >>> from introspect.images import ImageFolderDataset, Preprocess
        >>> model = introspect.load_model(None)   # the bundled ZFNet: conv1 7x7, stride 1
        >>> data = ImageFolderDataset(bundled_image_dir(), Preprocess.from_meta(model.introspect_meta))
        >>> result = introspect.first_layer_filters(model, data)
        >>> result.dead_count, round(result.mean_high_frequency, 3), result.mean_aliasing
        (0, 0.578, 0.0)
        >>> result.save("out/filters")     # filters.png, spectrum.png, filters.npy, report.csv, result.json
    """
    if not 0 < hf_cutoff < 0.5:
        raise IntrospectError(f"hf_cutoff must be in (0, 0.5) cycles per pixel, got {hf_cutoff}; e.g. 0.25")
    if not 0 <= norm_fraction < 1:
        raise IntrospectError(f"norm_fraction must be in [0, 1), got {norm_fraction}; e.g. 0.05")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise IntrospectError(f"batch_size must be a positive integer, got {batch_size!r}; e.g. 64")
    name, conv = resolve_conv(model, layer)
    weights = conv.weight.detach().cpu().float().clone()
    bias = conv.bias.detach().cpu().float().clone() if conv.bias is not None else None
    stride = (int(conv.stride[0]), int(conv.stride[1]))
    if not torch.isfinite(weights).all() or (bias is not None and not torch.isfinite(bias).all()):
        raise IntrospectError(f"layer {name!r} has NaN or infinite weights (a diverged training run?); "
                              "pass a checkpoint from before it diverged")
    grid_size(tuple(weights.shape[-2:]), fft_size)  # a bad fft_size fails before the data pass
    peak, seen = (None, 0) if dataset is None else max_activation(model, name, dataset, batch_size, progress)
    norm = weights.flatten(1).double().norm(dim=1).float()
    reasons = dead_reasons(norm, peak, norm_fraction)
    power = power_spectrum(weights, fft_size)
    shape = tuple(power.shape[-2:])
    return FiltersResult(
        layer=name, alias=alias_of(model, name), kernel_size=tuple(weights.shape[-2:]), stride=stride,
        weights=weights, bias=bias, norm=norm, max_activation=peak,
        dead=torch.tensor([bool(r) for r in reasons], dtype=torch.bool), reasons=reasons,
        high_frequency=band_fraction(power, high_frequency_mask(shape, hf_cutoff)).float(),
        aliasing=band_fraction(power, aliasing_mask(shape, stride)).float(),
        spectrum=torch.fft.fftshift(power, dim=(-2, -1)).float(),
        freq_y=torch.fft.fftshift(torch.from_numpy(frequencies(shape[0]))).float(),
        freq_x=torch.fft.fftshift(torch.from_numpy(frequencies(shape[1]))).float(),
        hf_cutoff=float(hf_cutoff), norm_fraction=float(norm_fraction),
        nyquist=(0.5 / stride[0], 0.5 / stride[1]), images_seen=seen,
    )


__all__ = ["first_layer_filters", "FiltersResult", "max_activation", "dead_reasons", "first_conv_layer", "resolve_conv",
           "NORM_FRACTION", "NEVER_ACTIVE", "NEGLIGIBLE_NORM"]
