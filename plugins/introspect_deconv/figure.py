"""Pictures of projections and where results go on disk (the edge: results know nothing of files).

Projections are shown with the deconvnet convention (``render.to_uint8(..., "symmetric")``: zero is
mid-grey, each projection scaled by its own largest magnitude), cropped to the receptive-field box,
beside the same box of the input image.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from introspect.plugin import grid, output_folder, to_uint8, written

#: Tiles smaller than this (pixels, longer side) are enlarged by an integer factor (nearest).
MIN_TILE = 96


def zoom_for(side: int, min_side: int = MIN_TILE) -> int:
    """The smallest integer factor that makes ``side`` pixels at least ``min_side``."""
    return max(1, math.ceil(min_side / max(int(side), 1)))


def enlarge(tile: np.ndarray, factor: int) -> np.ndarray:
    """Enlarge an ``(H, W, 3)`` uint8 tile ``factor`` times (nearest neighbour: pixels stay crisp)."""
    return tile if factor <= 1 else np.repeat(np.repeat(tile, factor, axis=0), factor, axis=1)


def thumbnail(tile: np.ndarray, side: int) -> np.ndarray:
    """Scale an ``(H, W, 3)`` uint8 tile so its longer side is ``side`` pixels."""
    h, w = tile.shape[:2]
    scale = side / max(h, w, 1)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.Resampling.BILINEAR if scale < 1 else Image.Resampling.NEAREST
    return np.asarray(Image.fromarray(tile).resize(size, resample))


def _crop(t: torch.Tensor, box: Sequence[int]) -> torch.Tensor:
    y0, x0, y1, x1 = (int(v) for v in box)
    if y1 <= y0 or x1 <= x0:  # nothing to show: the whole image instead
        return t
    return t[..., y0:y1, x0:x1]


def projection_tile(projection: torch.Tensor, box: Sequence[int]) -> np.ndarray:
    """A ``(C, H, W)`` projection cropped to ``box`` as uint8 RGB, symmetric around grey."""
    return to_uint8(_crop(projection, box), "symmetric")


def denormalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``image * std + mean`` clamped to ``[0, 1]`` (``(C, H, W)``); min-max scaled when the
    normalization does not match the channel count."""
    c = image.shape[0]
    if len(mean) != c or len(std) != c:
        lo, hi = float(image.min()), float(image.max())
        return (image - lo) / (hi - lo) if hi > lo else torch.zeros_like(image)
    m = torch.tensor(mean, dtype=image.dtype).view(-1, 1, 1)
    s = torch.tensor(std, dtype=image.dtype).view(-1, 1, 1)
    return (image * s + m).clamp(0.0, 1.0)


def patch_tile(image: torch.Tensor, box: Sequence[int], mean, std) -> np.ndarray:
    """The ``box`` of a preprocessed ``(C, H, W)`` input image as uint8 RGB."""
    return to_uint8(denormalize(_crop(image, box), mean, std), None)


def pair(left: np.ndarray, right: np.ndarray, factor: int = 1) -> np.ndarray:
    """Two tiles side by side (projection | patch), each enlarged ``factor`` times."""
    return grid([enlarge(left, factor), enlarge(right, factor)], ncols=2, pad=2)


def label(name: str, channel: int, activation: float, image: int | None = None) -> str:
    """``"conv5 ch 17 act 12.3"`` (with ``"img 2 "`` in front when several images are shown)."""
    text = f"{name} ch {channel} act {activation:.3g}"
    return f"img {image} {text}" if image is not None else text


# --------------------------------------------------------------------------------------------------
# project
# --------------------------------------------------------------------------------------------------
def projection_figure(result, ncols: int = 3) -> np.ndarray:
    """The grid of a :class:`~introspect_deconv.projection.Projection`: each projection beside its
    image patch, labelled with layer, channel and activation."""
    several = int(result.image_index.max()) > 0 if len(result) else False
    sides = [max(y1 - y0, x1 - x0) if y1 > y0 and x1 > x0 else max(result.inputs.shape[-2:])
             for y0, x0, y1, x1 in result.boxes.tolist()]
    factor = zoom_for(max(sides, default=1))
    tiles, labels = [], []
    for i in range(len(result)):
        n, box = int(result.image_index[i]), result.boxes[i].tolist()
        tiles.append(pair(projection_tile(result.projections[i], box),
                          patch_tile(result.inputs[n], box, result.mean, result.std), factor))
        labels.append(label(result.name, int(result.channel[i]), float(result.activation[i]),
                            n if several else None))
    return grid(tiles, ncols=min(ncols, max(1, len(tiles))), pad=4, labels=labels)


def save_projections(results: Sequence, out) -> list[Path]:
    """Write projections of one or more layers: ``<name>.npy`` ``(P, C, H, W)`` float32 and
    ``<name>.png`` per layer, ``result.json`` (every layer) and ``input.npy`` (the exact input).

    ``out`` is a folder or an open :class:`introspect.output.OutputDir`; nothing is written unless
    everything is. Returns the paths written.
    """
    with output_folder(out) as od:
        names = _write_projections(results, od)
    return written(od, names)


def _write_projections(results: Sequence, od) -> list[str]:
    from introspect_deconv.projection import file_stem

    names = []
    for result in results:
        stem = file_stem(result.name)
        od.save_npy(f"{stem}.npy", result.projections.float().numpy())
        od.save_png(f"{stem}.png", projection_figure(result))
        names += [f"{stem}.npy", f"{stem}.png"]
    od.save_npy("input.npy", results[0].inputs.float().numpy())
    doc = {"method": "deconvnet", "mode": results[0].mode, "input": "input.npy",
           "images": results[0].image_names, "layers": [r.to_dict() for r in results]}
    od.save_json("result.json", doc)
    return names + ["input.npy", "result.json"]


# --------------------------------------------------------------------------------------------------
# top
# --------------------------------------------------------------------------------------------------
def _top_tiles(top, j: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Projection and patch tiles of the winners of map ``j`` (empty slots skipped)."""
    projections, patches = [], []
    for r in range(top.k):
        if int(top.image_index[j, r]) < 0:
            continue
        box = top.frame_box(j, r)
        if top.projections is not None:
            projections.append(projection_tile(top.projections[j, r], box))
        patches.append(patch_tile(top.patches[j, r], box, top.mean, top.std))
    return projections, patches


def _square(n: int) -> int:
    return max(1, math.ceil(math.sqrt(n)))


def channel_figure(top, j: int) -> np.ndarray:
    """The paper's Fig. 2 for one feature map: its top-k projections in a grid beside the grid of
    the matching image patches."""
    projections, patches = _top_tiles(top, j)
    channel = int(top.channels[j])
    if not patches:
        blank = np.full((32, 32, 3), 255, np.uint8)
        return grid([blank], labels=[f"{top.name} ch {channel}: no images"])
    ncols = _square(top.k)
    factor = zoom_for(max(top.patches.shape[-2:]))
    right = grid([enlarge(t, factor) for t in patches], ncols=ncols, pad=2)
    best = float(top.activation[j, 0])
    if not projections:
        return grid([right], labels=[f"{top.name} ch {channel} top act {best:.3g}: patches"])
    left = grid([enlarge(t, factor) for t in projections], ncols=ncols, pad=2)
    return grid([left, right], ncols=2, pad=6,
                       labels=[f"{top.name} ch {channel} top act {best:.3g}: projections", "image patches"])


def overview_figure(top, side: int | None = None) -> np.ndarray:
    """Every mined map in one picture: small versions of its projection and patch grids."""
    count = len(top.channels)
    side = side or (48 if count <= 16 else 32 if count <= 64 else 20)
    tiles, labels = [], []
    for j in range(count):
        projections, patches = _top_tiles(top, j)
        ncols = _square(top.k)
        if not patches:
            tiles.append(np.full((side, side, 3), 255, np.uint8))
        else:
            parts = [grid([thumbnail(t, side) for t in patches], ncols=ncols, pad=1)]
            if projections:
                parts.insert(0, grid([thumbnail(t, side) for t in projections], ncols=ncols, pad=1))
            tiles.append(grid(parts, ncols=len(parts), pad=2))
        labels.append(f"ch {int(top.channels[j])}")
    return grid(tiles, ncols=_square(count), pad=4, labels=labels)
