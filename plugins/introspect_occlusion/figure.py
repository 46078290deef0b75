"""Pictures of an occlusion sweep: the panels of the paper's Fig. 7, as ``uint8`` arrays.

Each map value belongs to one occluder position; it is drawn as a ``stride x stride`` cell centred on
the occluder's centre, over the image, so a cell sits where the occluder was. Small inputs are
enlarged (nearest neighbour) so that the panels are at least about 224 pixels wide.
"""
from __future__ import annotations

import math
import re

import numpy as np
import torch

from introspect.plugin import draw_boxes, fill_image, grid, heatmap_overlay, to_uint8, with_colorbar

#: Distinct colours for the label map (panel e): tab10 then tab20's lighter tones.
PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
    (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (199, 199, 199),
    (219, 219, 141), (158, 218, 229),
]


def file_part(text: str) -> str:
    """``text`` made safe for a file name (``"T-shirt/top"`` -> ``"T-shirt_top"``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "x"


def _scale(hw) -> int:
    return int(min(8, max(1, math.ceil(224 / max(1, min(hw))))))


def _image(result, x: torch.Tensor) -> np.ndarray:
    c = x.shape[1]
    mean = torch.tensor(result.mean[:c], dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(result.std[:c], dtype=torch.float32).view(-1, 1, 1)
    return to_uint8((x[0].float().cpu() * std + mean).clamp(0, 1), None)


def _enlarge(img: np.ndarray, f: int) -> np.ndarray:
    return np.ascontiguousarray(img.repeat(f, 0).repeat(f, 1)) if f > 1 else img


def _cells(result, values: np.ndarray, f: int, shape) -> tuple[np.ndarray, tuple[int, int]]:
    """``values`` (``Py x Px``) as cells in enlarged image pixels, and the top-left of the block."""
    block = values.repeat(result.stride[0] * f, 0).repeat(result.stride[1] * f, 1)
    top = (result.size[0] - result.stride[0]) * f // 2
    left = (result.size[1] - result.stride[1]) * f // 2
    if top < 0:
        block, top = block[-top:], 0
    if left < 0:
        block, left = block[:, -left:], 0
    return block[: shape[0] - top, : shape[1] - left], (top, left)


def overlay(result, base: np.ndarray, values, f: int, cmap: str = "jet", vmin=None, vmax=None,
            alpha: float = 0.55) -> np.ndarray:
    """``base`` with ``values`` (one per position) coloured over the cells of their positions."""
    v = np.asarray(values, dtype=np.float64)
    vmin = float(np.nanmin(v)) if vmin is None else vmin
    vmax = float(np.nanmax(v)) if vmax is None else vmax
    block, (top, left) = _cells(result, v, f, base.shape)
    out = base.copy()
    h, w = block.shape
    out[top:top + h, left:left + w] = heatmap_overlay(base[top:top + h, left:left + w], block, alpha, cmap,
                                                      vmin, vmax, "nearest")
    return out


def label_panel(result, base: np.ndarray, f: int) -> np.ndarray:
    """Panel (e): the most probable class at each position, one colour per class, with a legend."""
    labels = result.label.numpy()
    order = [int(i) for i, _ in sorted(zip(*np.unique(labels, return_counts=True)), key=lambda p: -p[1])]
    colours = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(order)}
    block, (top, left) = _cells(result, labels, f, base.shape)
    painted = np.array([colours[int(c)] for c in block.reshape(-1)], dtype=np.float64).reshape(*block.shape, 3)
    out = base.copy()
    h, w = block.shape
    out[top:top + h, left:left + w] = np.round(0.4 * base[top:top + h, left:left + w] + 0.6 * painted).astype(np.uint8)
    swatches = [np.full((12, 12, 3), colours[c], np.uint8) for c in order[:12]]
    names = [result.class_name(c) for c in order[:12]]
    if len(order) > 12:
        swatches.append(np.full((12, 12, 3), 255, np.uint8))
        names.append(f"+{len(order) - 12} more")
    legend = grid(swatches, ncols=1, pad=2, labels=names)
    legend = legend[: out.shape[0]]
    gap = np.full((out.shape[0], 4, 3), 255, np.uint8)
    pad = np.full((out.shape[0] - legend.shape[0], legend.shape[1], 3), 255, np.uint8)
    return np.concatenate([out, gap, np.concatenate([legend, pad])], axis=1)


def input_panel(result, base: np.ndarray, f: int) -> np.ndarray:
    """Panel (a): the image, with the occluder where it lowers the first target's probability most."""
    iy, ix = divmod(int(result.prob[0].argmin()), result.prob.shape[2])
    y0, x0 = int(result.ys[iy]), int(result.xs[ix])
    y1, x1 = y0 + result.size[0], x0 + result.size[1]
    occluded = result.input.clone()
    fill = fill_image(occluded, result.fill, result.mean[: occluded.shape[1]], result.std[: occluded.shape[1]])
    occluded[..., y0:y1, x0:x1] = fill[..., y0:y1, x0:x1]
    img = _enlarge(_image(result, occluded), f)
    return draw_boxes(img, [(y0 * f, x0 * f, y1 * f, x1 * f)], color=(255, 255, 255), width=1)


def activation_title(result, i: int) -> str:
    """The title of panel (b) for layer ``i``: which map, and whether its total is rectified."""
    kind = "rectified" if result.rectified else "pre-ReLU"
    return f"(b) {result.layer_title(i)} map {result.channels[i]}\ntotal {kind} activation"


def panel_names(result) -> dict[str, str]:
    """The file name of every panel :func:`panels` draws, with what it shows."""
    names = {"a_input.png": "(a) the image with the occluder where it lowers the first target's probability most"}
    for i, channel in enumerate(result.channels):
        title = result.layer_title(i)
        names[f"b_activation_{file_part(title)}.png"] = (f"(b) total {result.total_kind} activation of {title} "
                                                         f"map {channel} at each occluder position")
        if result.projection is not None:
            names[f"c_projection_{file_part(title)}.png"] = (f"(c) deconvnet projection of {title} map {channel}, "
                                                             "unoccluded image")
    for name in result.target_names:
        names[f"d_prob_{file_part(name)}.png"] = f"(d) p({name}) at each occluder position"
    names["e_label.png"] = "(e) the most probable class at each occluder position"
    names["figure.png"] = "panels (a)-(e) of the first layer and target in a row (Fig. 7)"
    return names


def panels(result) -> dict[str, np.ndarray]:
    """Every panel of an :class:`~introspect_occlusion.method.OcclusionResult`, by file name.

    Returns:
        dict[str, np.ndarray]: ``a_input.png``, ``b_activation_<layer>.png`` per layer,
        ``c_projection_<layer>.png`` per layer (with projections), ``d_prob_<class>.png`` per target,
        ``e_label.png`` and ``figure.png`` (a, b, c, d, e of the first layer and target in a row).
    """
    f = _scale(result.input.shape[-2:])
    base = _enlarge(_image(result, result.input), f)
    out: dict[str, np.ndarray] = {"a_input.png": input_panel(result, base, f)}
    row = [out["a_input.png"]]
    titles = ["(a) input, occluder\nat the lowest p"]
    for i, (_layer, channel) in enumerate(zip(result.layers, result.channels)):
        act = result.activation[i].numpy()
        lo, hi = float(act.min()), float(act.max())
        title = result.layer_title(i)
        kind = "rectified" if result.rectified else "pre-ReLU"
        picture = with_colorbar(overlay(result, base, act, f, "jet", lo, hi), "jet", lo, hi,
                                f"{kind}\ntotal\nmap {channel}")
        out[f"b_activation_{file_part(title)}.png"] = picture
        if i == 0:
            row.append(picture)
            titles.append(activation_title(result, i))
        if result.projection is not None:
            proj = _enlarge(to_uint8(result.projection[i], "symmetric"), f)
            out[f"c_projection_{file_part(title)}.png"] = proj
            if i == 0:
                row.append(proj)
                titles.append(f"(c) projection of\n{title} map {channel}")
    for t, name in enumerate(result.target_names):
        p = result.prob[t].numpy()
        lo, hi = float(p.min()), float(p.max())
        picture = with_colorbar(overlay(result, base, p, f, "jet", lo, hi), "jet", lo, hi, f"p({name})")
        out[f"d_prob_{file_part(name)}.png"] = picture
        if t == 0:
            row.append(picture)
            titles.append(f"(d) p({name})")
    out["e_label.png"] = label_panel(result, base, f)
    row.append(out["e_label.png"])
    titles.append("(e) most probable\nclass")
    out["figure.png"] = grid(row, ncols=len(row), pad=6, labels=titles)
    return out


__all__ = ["panels", "panel_names", "activation_title", "overlay", "label_panel", "input_panel", "file_part", "PALETTE"]
