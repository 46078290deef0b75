"""The pictures of ``introspect filters``: the filter grid (as in Fig. 6) and the filters' spectrum."""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw

from introspect.plugin import colormap, grid, line_plot, to_uint8, with_colorbar
from introspect_filters.spectrum import energy_beyond

#: Filters are enlarged (nearest neighbour) to about this many pixels per side.
TILE = 56
#: Frame colours of a dead and of a live filter.
DEAD, LIVE = (220, 30, 30), (235, 235, 235)
#: Side of the spectrum heat map in pixels (about).
SPECTRUM_SIDE = 224


def filter_image(weights: torch.Tensor) -> np.ndarray:
    """One filter ``(C_in, kh, kw)`` as ``(kh, kw, 3)`` uint8, contrast-normalized to its own range.

    Three input channels are shown as RGB, one as grey; for any other count, the input channel with
    the most energy is shown in grey.
    """
    w = weights.detach().cpu().double()
    if w.shape[0] not in (1, 3):
        w = w[int(w.square().sum((1, 2)).argmax())][None]
    return to_uint8(w, "minmax")


def filter_tiles(result) -> list[np.ndarray]:
    """One tile per filter: :func:`filter_image` enlarged ``zoom`` times and framed (red when dead)."""
    zoom = max(1, math.ceil(TILE / max(result.kernel_size)))
    tiles = []
    for w, dead in zip(result.weights, result.dead.tolist()):
        big = np.kron(filter_image(w), np.ones((zoom, zoom, 1), dtype=np.uint8))
        tiles.append(
            np.pad(big, ((2, 2), (2, 2), (0, 0)), constant_values=0) + _frame(big.shape, DEAD if dead else LIVE)
        )
    return tiles


def _frame(shape, color) -> np.ndarray:
    frame = np.zeros((shape[0] + 4, shape[1] + 4, 3), dtype=np.uint8)
    frame[:2], frame[-2:], frame[:, :2], frame[:, -2:] = color, color, color, color
    return frame


def filters_picture(result) -> np.ndarray:
    """The filter grid with each filter's index and aliasing energy under it; dead filters framed red."""
    labels = [f"{i}{' dead' if d else ''}\nal {a:.2f}"
              for i, (d, a) in enumerate(zip(result.dead.tolist(), result.aliasing.tolist()))]
    body = grid(filter_tiles(result), pad=4, labels=labels)
    kh, kw = result.kernel_size
    caption = (f"{result.name}: {len(result.weights)} filters {kh}x{kw}, stride {result.stride[0]}; "
               f"{result.dead_count} dead (red frame)\nal: energy above the stride's Nyquist "
               f"{result.nyquist[0]:.3g} cycles/pixel (mean {result.mean_aliasing:.3f})")
    return grid([body], ncols=1, pad=6, labels=[caption])


def _mean_share(result) -> np.ndarray:
    """Mean over filters with energy of each filter's spectrum divided by its total (shifted)."""
    power = result.spectrum.double()
    total = power.sum((1, 2))
    live = power[total > 0] / total[total > 0, None, None]
    return (live.mean(0) if len(live) else torch.zeros(power.shape[-2:])).numpy()


def spectrum_heatmap(result) -> np.ndarray:
    """The mean share of energy per frequency (DC at the centre) with the stride's Nyquist band outlined
    in white and the high-frequency cutoff as an orange circle."""
    share = _mean_share(result)
    ph, pw = share.shape
    zoom = max(1, SPECTRUM_SIDE // max(ph, pw))
    top = float(share.max()) or 1.0
    picture = np.kron(colormap(share, "viridis", 0.0, top), np.ones((zoom, zoom, 1), dtype=np.uint8))
    m = 4  # a dark margin, so that a box around the whole spectrum (stride 1) shows
    canvas = Image.fromarray(np.pad(picture, ((m, m), (m, m), (0, 0)), constant_values=60))
    draw = ImageDraw.Draw(canvas)
    fy, fx = result.freq_y.numpy(), result.freq_x.numpy()
    rows = np.flatnonzero(np.abs(fy) <= result.nyquist[0])
    cols = np.flatnonzero(np.abs(fx) <= result.nyquist[1])
    draw.rectangle([m + cols[0] * zoom - 2, m + rows[0] * zoom - 2, m + (cols[-1] + 1) * zoom + 1,
                    m + (rows[-1] + 1) * zoom + 1], outline=(255, 255, 255), width=2)
    cy = m + (int(np.flatnonzero(fy == 0)[0]) + 0.5) * zoom
    cx = m + (int(np.flatnonzero(fx == 0)[0]) + 0.5) * zoom
    ry, rx = result.hf_cutoff * ph * zoom, result.hf_cutoff * pw * zoom
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], outline=(255, 140, 0), width=2)
    return with_colorbar(np.asarray(canvas), "viridis", 0.0, top, "share of\nenergy")


def spectrum_picture(result) -> np.ndarray:
    """``spectrum.png``: the mean spectrum, and the mean share of energy beyond each frequency."""
    cutoffs = np.linspace(0.0, 0.5, 51)
    power = torch.fft.ifftshift(result.spectrum.double(), dim=(-2, -1))
    curve = line_plot(cutoffs, {"mean over filters": energy_beyond(power, cutoffs)}, ylim=(0.0, 1.0),
                      title=f"share of energy with max(|fy|,|fx|) > f; at the Nyquist "
                            f"{result.nyquist[0]:.3g}: {result.mean_aliasing:.3f}",
                      xlabel="f (cycles per pixel)", ylabel="share of energy", size=(440, 300),
                      markers=False)
    ph, pw = result.spectrum.shape[-2:]
    left = (f"mean power spectrum of {result.name}\n({ph}x{pw} DFT, DC at the centre)\n"
            f"white box: |f| <= Nyquist of stride {result.stride[0]}\norange circle: HF cutoff {result.hf_cutoff:g}")
    return grid(
        [spectrum_heatmap(result), curve], ncols=2, pad=8, labels=[left, "aliasing: the share beyond the Nyquist"]
    )


__all__ = ["filters_picture", "spectrum_picture", "filter_tiles", "filter_image", "spectrum_heatmap"]
