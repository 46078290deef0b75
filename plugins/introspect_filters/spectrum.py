"""The spectrum of a filter bank, and the share of each filter's energy in a frequency band.

Definition (used by every number of :func:`~introspect_filters.method.first_layer_filters`):

* The **power spectrum** of filter ``w`` (``C_in x kh x kw``) is ``P(u, v) = sum_c |W_c(u, v)|^2``, where
  ``W_c`` is the two-dimensional DFT of input channel ``c`` of the raw filter (not made zero-mean) on a
  ``Ph x Pw`` grid: ``W_c(u, v) = sum_{y, x} w[c, y, x] exp(-2 pi i (u y / Ph + v x / Pw))``. By default
  ``Ph x Pw = kh x kw`` (the filter's own DFT, one period: a constant filter is pure DC, a ``+1/-1``
  checkerboard of even size is pure Nyquist); ``size`` zero-pads to a larger grid, which samples the
  filter's frequency response more finely (then the side lobes of a box filter count as high
  frequencies too).
* Bin ``(u, v)`` has the frequencies ``fy = u / Ph`` and ``fx = v / Pw`` in cycles per pixel, folded
  into ``[-1/2, 1/2)`` (``numpy.fft.fftfreq``).
* **High-frequency energy**: the fraction of ``sum P`` in bins whose radial frequency
  ``sqrt(fy^2 + fx^2)`` exceeds a cutoff (default :data:`HF_CUTOFF` = 1/4 cycle per pixel, half the
  pixel Nyquist frequency).
* **Aliasing energy** at stride ``(sy, sx)``: the fraction of ``sum P`` in bins with ``|fy| > 1/(2 sy)``
  or ``|fx| > 1/(2 sx)``, above the Nyquist frequency of the subsampled output on either axis: the part
  of the response that folds onto lower frequencies when it is kept only every ``s`` pixels. It is 0
  at stride 1.
* A filter with no energy (all zeros) has both fractions 0.
"""
from __future__ import annotations

import numpy as np
import torch

from introspect.plugin import IntrospectError
from introspect_filters.defaults import HF_CUTOFF  # noqa: E402  (default cutoff, cycles per pixel)


def grid_size(kernel: tuple[int, int], size: int | tuple[int, int] | None) -> tuple[int, int]:
    """The DFT grid ``(Ph, Pw)``: the kernel's own size, or ``size`` (at least the kernel) when given."""
    if size is None:
        return int(kernel[0]), int(kernel[1])
    pair = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    if len(pair) != 2 or any(isinstance(s, bool) or not isinstance(s, int) for s in pair):
        raise IntrospectError(f"fft_size must be an integer or a pair, got {size!r}; e.g. fft_size=32")
    if pair[0] < kernel[0] or pair[1] < kernel[1]:
        raise IntrospectError(f"fft_size {pair[0]}x{pair[1]} is smaller than the {kernel[0]}x{kernel[1]} filters; "
                              f"use at least {max(kernel)} (or leave it out for the filters' own size)")
    return int(pair[0]), int(pair[1])


def power_spectrum(weights: torch.Tensor, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """The power spectrum of every filter, summed over input channels (see the module docstring).

    Args:
        weights (Tensor): ``(C_out, C_in, kh, kw)`` filters.
        size (int | tuple[int, int] | None): DFT grid, zero-padding the filters; default ``(kh, kw)``.

    Returns:
        Tensor: ``(C_out, Ph, Pw)`` float64, in DFT order (bin ``(0, 0)`` is DC; frequencies from
        :func:`frequencies`). ``spectrum.sum((1, 2)) == Ph * Pw * ||w||^2`` (Parseval).

    Example:
        >>> power_spectrum(torch.ones(1, 1, 7, 7))[0, 0, 0]   # all the energy at DC
        tensor(2401., dtype=torch.float64)
    """
    if weights.dim() != 4:
        raise IntrospectError(f"filters must be (C_out, C_in, kh, kw), got shape {tuple(weights.shape)}")
    ph, pw = grid_size(tuple(weights.shape[-2:]), size)
    spectrum = torch.fft.fft2(weights.detach().cpu().double(), s=(ph, pw))
    return spectrum.abs().square().sum(1)


def frequencies(n: int) -> np.ndarray:
    """Frequencies in cycles per pixel of the ``n`` DFT bins, in DFT order (``numpy.fft.fftfreq``)."""
    return np.fft.fftfreq(n)


def high_frequency_mask(shape: tuple[int, int], cutoff: float = HF_CUTOFF) -> torch.Tensor:
    """``(Ph, Pw)`` bool, True where the radial frequency ``sqrt(fy^2 + fx^2)`` exceeds ``cutoff``."""
    fy, fx = np.meshgrid(frequencies(shape[0]), frequencies(shape[1]), indexing="ij")
    return torch.from_numpy(np.hypot(fy, fx) > cutoff)


def aliasing_mask(shape: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """``(Ph, Pw)`` bool, True where ``|fy| > 1/(2 sy)`` or ``|fx| > 1/(2 sx)``: what aliases at ``stride``."""
    fy, fx = np.meshgrid(frequencies(shape[0]), frequencies(shape[1]), indexing="ij")
    return torch.from_numpy((np.abs(fy) > 0.5 / stride[0]) | (np.abs(fx) > 0.5 / stride[1]))


def band_fraction(spectrum: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(C_out,)`` fraction of each filter's energy inside ``mask`` (0 for a filter without energy)."""
    total = spectrum.sum((1, 2))
    inside = (spectrum * mask.to(spectrum.dtype)).sum((1, 2))
    return torch.where(total > 0, inside / total.clamp(min=torch.finfo(total.dtype).tiny), torch.zeros_like(total))


def energy_beyond(spectrum: torch.Tensor, cutoffs) -> np.ndarray:
    """Mean over filters of the fraction of energy with ``max(|fy|, |fx|) > c``, for each cutoff ``c``.

    Filters without energy are left out. Used for the curve of :func:`~introspect_filters.figure.spectrum_picture`.
    """
    shape = tuple(spectrum.shape[-2:])
    live = spectrum[spectrum.sum((1, 2)) > 0]
    if len(live) == 0:
        return np.zeros(len(cutoffs))
    fy, fx = np.meshgrid(frequencies(shape[0]), frequencies(shape[1]), indexing="ij")
    reach = np.maximum(np.abs(fy), np.abs(fx))
    return np.array([float(band_fraction(live, torch.from_numpy(reach > c)).mean()) for c in cutoffs])


__all__ = ["HF_CUTOFF", "power_spectrum", "frequencies", "high_frequency_mask", "aliasing_mask", "band_fraction",
           "energy_beyond", "grid_size"]
