"""Turning tensors into pictures a person can read.

Display conventions: :func:`to_uint8` scales an image-like tensor to 8 bits (``"symmetric"`` is the
deconvnet convention -- zero is mid-grey), :func:`colormap` maps a 2-D array through a lookup table
(``jet``, ``viridis``, ``gray``, ``bwr``; no matplotlib), and :func:`grid`, :func:`with_colorbar`,
:func:`draw_boxes`, :func:`heatmap_overlay` compose figures with readable labels.

Writing files (:class:`OutputDir`, :func:`save_png`, :func:`jsonable`, :func:`csv_text`) lives in
:mod:`introspect.output`; the names are re-exported here.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from introspect.errors import IntrospectError
from introspect.output import OutputDir, csv_text, jsonable, save_png  # noqa: F401  (re-exported)

Color = tuple[int, int, int]

# --------------------------------------------------------------------------------------------------
# colormaps
# --------------------------------------------------------------------------------------------------
# matplotlib's "jet" segment data: (position, value) anchors per channel.
_JET = (
    ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
)
# viridis sampled at 9 evenly spaced points, interpolated linearly in between.
_VIRIDIS = (
    (68, 1, 84), (71, 45, 123), (59, 82, 139), (44, 114, 142), (33, 144, 140),
    (39, 173, 129), (93, 200, 99), (170, 220, 50), (253, 231, 37),
)
# blue - white - red, for signed maps (e.g. occlusion differences).
_BWR = ((0, 0, 255), (255, 255, 255), (255, 0, 0))


def _lut_from_anchors(anchors: Sequence[Color]) -> np.ndarray:
    at = np.linspace(0.0, 1.0, len(anchors))
    x = np.linspace(0.0, 1.0, 256)
    table = np.stack([np.interp(x, at, [a[c] for a in anchors]) for c in range(3)], axis=1)
    return np.round(table).astype(np.uint8)


def _lut_from_segments(segments) -> np.ndarray:
    x = np.linspace(0.0, 1.0, 256)
    table = [np.interp(x, [p for p, _ in seg], [v for _, v in seg]) for seg in segments]
    return np.round(np.stack(table, axis=1) * 255).astype(np.uint8)


#: Colormap name -> ``(256, 3)`` uint8 lookup table.
COLORMAPS: dict[str, np.ndarray] = {
    "jet": _lut_from_segments(_JET),
    "viridis": _lut_from_anchors(_VIRIDIS),
    "gray": _lut_from_anchors(((0, 0, 0), (255, 255, 255))),
    "bwr": _lut_from_anchors(_BWR),
}


def _lut(name: str) -> np.ndarray:
    if name not in COLORMAPS:
        raise IntrospectError(
            f"unknown colormap {name!r}; use one of {', '.join(sorted(COLORMAPS))}"
        )
    return COLORMAPS[name]


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x)


def colormap(values: Any, name: str = "jet", vmin: float | None = None,
             vmax: float | None = None) -> np.ndarray:
    """Map a 2-D array of values to colors through a lookup table.

    Args:
        values (np.ndarray | torch.Tensor): ``(H, W)`` values.
        name (str): ``"jet"`` (default), ``"viridis"``, ``"gray"`` or ``"bwr"`` (see :data:`COLORMAPS`).
        vmin, vmax (float | None): values mapped to the first and last color; default the finite
            minimum and maximum. Values outside are clipped; NaN takes the first color; when
            ``vmax <= vmin`` everything takes the first color.

    Returns:
        np.ndarray: ``(H, W, 3)`` ``uint8``.

    Example:
        >>> colormap(np.array([[0.0, 1.0]]), "jet")
        array([[[  0,   0, 128],
                [128,   0,   0]]], dtype=uint8)
    """
    lut = _lut(name)
    v = _as_numpy(values).astype(np.float64)
    if v.ndim != 2:
        raise IntrospectError(f"colormap needs a 2-D (H, W) array, got shape {v.shape}; pass one map")
    finite = v[np.isfinite(v)]
    lo = float(vmin) if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = float(vmax) if vmax is not None else (float(finite.max()) if finite.size else 0.0)
    if hi > lo:
        t = np.clip((np.nan_to_num(v, nan=lo) - lo) / (hi - lo), 0.0, 1.0)
    else:
        t = np.zeros_like(v)
    return lut[np.round(t * 255).astype(np.intp)]


# --------------------------------------------------------------------------------------------------
# tensors to 8-bit images
# --------------------------------------------------------------------------------------------------
def _scale(x: np.ndarray, normalize: str | None) -> np.ndarray:
    """Scale to ``[0, 1]`` following ``normalize`` (see :func:`to_uint8`)."""
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    if normalize is None:
        return x
    if normalize == "minmax":
        lo, hi = float(x.min()), float(x.max())
        return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    if normalize == "symmetric":
        peak = float(np.abs(x).max())
        return x / (2 * peak) + 0.5 if peak > 0 else np.full_like(x, 0.5)
    raise IntrospectError(
        f"unknown normalize {normalize!r}; use 'minmax', 'symmetric' or None"
    )


def to_uint8(img: Any, normalize: str | None = "minmax") -> np.ndarray:
    """Turn an image-like tensor into an 8-bit RGB array for display.

    Args:
        img (torch.Tensor | np.ndarray): ``(3, H, W)``, ``(1, H, W)`` or ``(H, W)``, channel first.
        normalize (str | None): ``"minmax"`` (default): ``(x - min) / (max - min)`` over all
            channels, a constant image becomes black; ``"symmetric"``: the deconvnet convention
            ``x / (2 max|x|) + 0.5``, so 0 is mid-grey (128), an all-zero image is all grey;
            ``None``: values are taken as already in ``[0, 1]`` and clipped.

    Returns:
        np.ndarray: ``(H, W, 3)`` ``uint8`` (one-channel input is repeated). NaN and inf count as 0.

    Example:
        >>> to_uint8(torch.tensor([[-1.0, 0.0, 1.0]]), "symmetric")[0, :, 0]
        array([  0, 128, 255], dtype=uint8)
    """
    x = _as_numpy(img).astype(np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise IntrospectError(
            f"to_uint8 needs a (3, H, W), (1, H, W) or (H, W) image, got shape {x.shape}; "
            "pass one image, channels first"
        )
    x = np.clip(_scale(x, normalize), 0.0, 1.0)
    out = np.round(x * 255).astype(np.uint8).transpose(1, 2, 0)
    return np.ascontiguousarray(np.repeat(out, 3, axis=2) if out.shape[2] == 1 else out)


def _rgb_array(image: Any, what: str = "image") -> np.ndarray:
    """``image`` as ``(H, W, 3)`` uint8: grayscale ``(H, W)`` is repeated, alpha is dropped."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or a.dtype != np.uint8:
        raise IntrospectError(
            f"{what} must be an (H, W, 3) uint8 array, got shape {a.shape} {a.dtype}; "
            "convert it with to_uint8 first"
        )
    return np.ascontiguousarray(a[:, :, :3])


def heatmap_overlay(image: np.ndarray, values: Any, alpha: float = 0.5, cmap: str = "jet",
                    vmin: float | None = None, vmax: float | None = None,
                    resample: str = "bilinear") -> np.ndarray:
    """Blend a colored map over an image, the map stretched to the image size.

    Args:
        image (np.ndarray): ``(H, W, 3)`` ``uint8``.
        values (np.ndarray | torch.Tensor): ``(h, w)`` map, e.g. an occlusion probability map.
        alpha (float): weight of the colors, in ``[0, 1]`` (default 0.5).
        cmap (str): colormap name (default ``"jet"``).
        vmin, vmax (float | None): color range, as in :func:`colormap`.
        resample (str): ``"bilinear"`` (default) or ``"nearest"``.

    Returns:
        np.ndarray: ``(H, W, 3)`` ``uint8``: ``(1 - alpha) * image + alpha * colormap(values)``.

    Example:
        >>> heatmap_overlay(np.zeros((64, 64, 3), np.uint8), np.random.rand(7, 7)).shape
        (64, 64, 3)
    """
    base = _rgb_array(image)
    if not 0.0 <= alpha <= 1.0:
        raise IntrospectError(f"alpha must be in [0, 1], got {alpha}; e.g. 0.5")
    methods = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}
    if resample not in methods:
        raise IntrospectError(f"unknown resample {resample!r}; use 'bilinear' or 'nearest'")
    v = _as_numpy(values).astype(np.float32)
    if v.ndim != 2:
        raise IntrospectError(
            f"heatmap values must be 2-D (h, w), got shape {v.shape}; pass one map"
        )
    lo = vmin if vmin is not None else float(np.nanmin(v))
    hi = vmax if vmax is not None else float(np.nanmax(v))
    size = (base.shape[1], base.shape[0])
    stretched = np.asarray(Image.fromarray(v, "F").resize(size, methods[resample]))
    colors = colormap(stretched, cmap, lo, hi).astype(np.float64)
    return np.round((1 - alpha) * base + alpha * colors).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# text, grids, colorbars, boxes
# --------------------------------------------------------------------------------------------------
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def text_size(text: str) -> tuple[int, int]:
    """``(width, height)`` in pixels of ``text`` (may contain newlines) in PIL's default font.

    Example:
        >>> w, h = text_size("conv5 ch 12")  # about (56, 10)
    """
    if not text:
        return 0, 0
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    x0, y0, x1, y1 = draw.multiline_textbbox((0, 0), text, font=_font())
    return int(math.ceil(x1)), int(math.ceil(y1))


def _bg_color(bg: int | Sequence[int]) -> Color:
    if isinstance(bg, (int, np.integer)):
        return (int(bg),) * 3
    return cast(Color, tuple(int(c) for c in bg)[:3])


def _ink(bg: Color) -> Color:
    """Black text on light backgrounds, white text on dark ones."""
    return (0, 0, 0) if sum(bg) >= 384 else (255, 255, 255)


def grid(tiles: Sequence[np.ndarray], ncols: int | None = None, pad: int = 2,
         labels: Sequence[str] | None = None, bg: int | Sequence[int] = 255) -> np.ndarray:
    """Lay out tiles in rows, each with an optional text label underneath.

    Every cell is as large as the largest tile (and as wide as the widest label); tiles are centered
    in their cell, labels centered below them in the default PIL font.

    Args:
        tiles (list of np.ndarray): ``(H, W, 3)`` (or ``(H, W)``) ``uint8`` images; sizes may differ.
        ncols (int | None): tiles per row; default ``ceil(sqrt(len(tiles)))``.
        pad (int): pixels between cells and around the border (default 2).
        labels (list[str] | None): one label per tile (``"\\n"`` starts a new line), or None.
        bg (int | tuple): background gray level or RGB color (default 255, white).

    Returns:
        np.ndarray: ``(rows * cell_h + (rows + 1) * pad, ncols * cell_w + (ncols + 1) * pad, 3)``
        ``uint8``, where ``cell_h`` includes the label height.

    Example:
        >>> grid([np.zeros((8, 8, 3), np.uint8)] * 9, ncols=3, pad=1).shape
        (28, 28, 3)
    """
    arrays = [_rgb_array(t, "grid tile") for t in tiles]
    if not arrays:
        raise IntrospectError("grid needs at least one tile; pass a non-empty list")
    if labels is not None and len(labels) != len(arrays):
        raise IntrospectError(
            f"grid got {len(labels)} labels for {len(arrays)} tiles; give one label per tile"
        )
    ncols = ncols or math.ceil(math.sqrt(len(arrays)))
    if ncols < 1 or pad < 0:
        raise IntrospectError(f"grid needs ncols >= 1 and pad >= 0, got {ncols} and {pad}; fix them")
    texts = [str(s) for s in labels] if labels is not None else None
    return _compose(arrays, min(ncols, len(arrays)), pad, texts, _bg_color(bg))


def _compose(arrays: list[np.ndarray], ncols: int, pad: int, texts: list[str] | None,
             color: Color) -> np.ndarray:
    """Paste ``arrays`` (and ``texts`` under them) into a grid; see :func:`grid`."""
    nrows = math.ceil(len(arrays) / ncols)
    sizes = [text_size(t) for t in texts] if texts is not None else [(0, 0)]
    label_h = max(h for _, h in sizes) + 2 if texts is not None else 0
    tile_h = max(a.shape[0] for a in arrays)
    cell_w = max(max(a.shape[1] for a in arrays), max(w for w, _ in sizes))
    cell_h = tile_h + label_h
    size = (ncols * cell_w + (ncols + 1) * pad, nrows * cell_h + (nrows + 1) * pad)
    canvas = Image.new("RGB", size, color)
    draw = ImageDraw.Draw(canvas)
    for i, a in enumerate(arrays):
        left = pad + (i % ncols) * (cell_w + pad)
        top = pad + (i // ncols) * (cell_h + pad)
        corner = (left + (cell_w - a.shape[1]) // 2, top + (tile_h - a.shape[0]) // 2)
        canvas.paste(Image.fromarray(a), corner)
        if texts is not None:
            at = (left + (cell_w - sizes[i][0]) // 2, top + tile_h + 1)
            draw.multiline_text(at, texts[i], fill=_ink(color), font=_font(), align="center")
    return np.asarray(canvas).copy()


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def colorbar(height: int, cmap: str = "jet", vmin: float = 0.0, vmax: float = 1.0,
             label: str | None = None, bar_width: int = 12) -> np.ndarray:
    """A small vertical colorbar: ``vmax`` at the top, ``vmin`` at the bottom, values written beside.

    Args:
        height (int): height in pixels (at least 2).
        cmap (str): colormap name (default ``"jet"``).
        vmin, vmax (float): the values at the bottom and top.
        label (str | None): text written beside the middle of the bar (e.g. ``"p(true class)"``).
        bar_width (int): width of the color strip (default 12).

    Returns:
        np.ndarray: ``(height, W, 3)`` ``uint8`` on white, ``W`` wide enough for the text.

    Example:
        >>> colorbar(100, "viridis", 0.0, 1.0, "prob").shape[0]
        100
    """
    if height < 2:
        raise IntrospectError(
            f"colorbar height must be at least 2, got {height}; pass a larger height"
        )
    ramp = np.linspace(1.0, 0.0, height)[:, None].repeat(bar_width, axis=1)
    strip = colormap(ramp, cmap, 0.0, 1.0)
    texts = [_fmt(vmax), _fmt(vmin)] + ([str(label)] if label else [])
    text_w = max(text_size(t)[0] for t in texts)
    canvas = Image.new("RGB", (bar_width + 2 + 3 + text_w + 2, height), (255, 255, 255))
    canvas.paste(Image.fromarray(strip), (0, 0))
    draw, font, x = ImageDraw.Draw(canvas), _font(), bar_width + 4
    draw.text((x, 0), texts[0], fill=(0, 0, 0), font=font)
    bottom = max(0, height - text_size(texts[1])[1] - 1)
    draw.text((x, bottom), texts[1], fill=(0, 0, 0), font=font)
    if label:
        middle = max(0, (height - text_size(label)[1]) // 2)
        draw.multiline_text((x, middle), label, fill=(0, 0, 0), font=font)
    return np.asarray(canvas).copy()


def with_colorbar(img: np.ndarray, cmap: str = "jet", vmin: float = 0.0, vmax: float = 1.0,
                  label: str | None = None, pad: int = 4) -> np.ndarray:
    """``img`` with a :func:`colorbar` of the same height at its right, on white.

    Args:
        img (np.ndarray): ``(H, W, 3)`` ``uint8``.
        cmap, vmin, vmax, label: as in :func:`colorbar`.
        pad (int): white pixels between image and bar (default 4).

    Returns:
        np.ndarray: ``(H, W + pad + bar width, 3)`` ``uint8``.

    Example:
        >>> with_colorbar(colormap(m), "jet", m.min(), m.max(), "activation").shape[0] == m.shape[0]
        True
    """
    base = _rgb_array(img)
    bar = colorbar(max(base.shape[0], 2), cmap, vmin, vmax, label)[: base.shape[0]]
    gap = np.full((base.shape[0], pad, 3), 255, np.uint8)
    return np.concatenate([base, gap, bar], axis=1)


def draw_boxes(image: np.ndarray, boxes: Sequence[Sequence[float]],
               labels: Sequence[str] | None = None, color: Color = (255, 0, 0),
               width: int = 2) -> np.ndarray:
    """A copy of ``image`` with rectangles (and labels at their top-left corners) drawn on it.

    Args:
        image (np.ndarray): ``(H, W, 3)`` ``uint8``.
        boxes (list of (y0, x0, y1, x1)): end-exclusive pixel boxes (floats are rounded); parts
            outside the image are clipped.
        labels (list[str] | None): one text per box, or None.
        color (tuple[int, int, int]): outline and label background color (default red).
        width (int): outline width in pixels (default 2), drawn inside the box.

    Returns:
        np.ndarray: ``(H, W, 3)`` ``uint8``; ``image`` is not modified.

    Example:
        >>> draw_boxes(np.zeros((32, 32, 3), np.uint8), [(4, 4, 20, 20)], ["rf conv1"]).shape
        (32, 32, 3)
    """
    canvas = Image.fromarray(_rgb_array(image))
    if labels is not None and len(labels) != len(boxes):
        raise IntrospectError(
            f"got {len(labels)} labels for {len(boxes)} boxes; give one label per box"
        )
    draw = ImageDraw.Draw(canvas)
    color = _bg_color(color)
    for i, box in enumerate(boxes):
        y0, x0, y1, x1 = (int(round(float(v))) for v in box)
        if y1 <= y0 or x1 <= x0:
            continue
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=color, width=width)
        if labels is not None and labels[i]:
            tw, th = text_size(str(labels[i]))
            draw.rectangle([x0, y0, x0 + tw + 2, y0 + th + 1], fill=color)
            draw.multiline_text((x0 + 1, y0), str(labels[i]), fill=_ink(color), font=_font())
    return np.asarray(canvas).copy()


__all__ = ["Color", "COLORMAPS", "colormap", "to_uint8", "heatmap_overlay", "text_size", "grid", "colorbar",
           "with_colorbar", "draw_boxes"]
