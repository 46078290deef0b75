"""The picture of a feature evolution (Fig. 4): per layer a block, rows feature maps, columns epochs.

Each tile is the deconvnet projection of the map's strongest activation at that epoch, cropped to its
receptive field and shown with the deconvnet convention (:func:`introspect.render.to_uint8` with
``"symmetric"``: zero is mid-grey, each tile scaled by its own largest magnitude), enlarged by one
integer factor per layer so that small fields stay readable; the label under it names the map, the
epoch and the activation value.
"""
from __future__ import annotations

import math
import re

import numpy as np

from introspect.plugin import grid, to_uint8

#: Tiles are enlarged (nearest neighbour) until the receptive field is at least this many pixels.
MIN_TILE = 64


def file_stem(name: str) -> str:
    """``name`` made safe as part of a file name (``conv5`` stays, ``layer4.1/conv`` -> ``layer4.1_conv``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "layer"


def tile(projection, box, factor: int) -> np.ndarray:
    """A ``(C, fh, fw)`` projection cropped to ``box`` (window coordinates), as uint8 RGB enlarged
    ``factor`` times."""
    y0, x0, y1, x1 = (int(v) for v in box)
    part = projection[..., y0:y1, x0:x1] if y1 > y0 and x1 > x0 else projection
    picture = to_uint8(part, "symmetric")
    return np.repeat(np.repeat(picture, factor, axis=0), factor, axis=1)


def layer_figure(entry, epochs) -> np.ndarray:
    """The block of one :class:`~introspect_evolution.method.LayerEvolution`: ``M`` rows (maps) by
    ``E`` columns (epochs), each tile labelled ``map C ep E`` and its activation."""
    m, e = entry.activation.shape
    factor = max(1, math.ceil(MIN_TILE / max(entry.projections.shape[-2:])))
    tiles, labels = [], []
    for j in range(m):
        channel = int(entry.channels[j])
        for k in range(e):
            tiles.append(tile(entry.projections[j, k], entry.frame_box(j, k), factor))
            labels.append(f"map {channel} ep {epochs[k]}\nact {float(entry.activation[j, k]):.3g}")
    return grid(tiles, ncols=e, pad=3, labels=labels)


def evolution_figure(result, ncols: int | None = None) -> np.ndarray:
    """Every layer of an :class:`~introspect_evolution.method.EvolutionResult` as a block
    (``ncols`` blocks per row, default about the square root of the number of layers)."""
    blocks = [layer_figure(entry, result.epochs) for entry in result.layers]
    titles = [f"{entry.name}: rows feature maps, columns epochs" for entry in result.layers]
    ncols = ncols or max(1, math.ceil(math.sqrt(len(blocks))))
    return grid(blocks, ncols=ncols, pad=8, labels=titles)


__all__ = ["layer_figure", "evolution_figure", "tile", "file_stem", "MIN_TILE"]
