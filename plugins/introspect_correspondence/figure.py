"""Pictures of a correspondence result: the images with their part boxes, and the per-pair matrices."""
from __future__ import annotations

import math

import numpy as np
import torch

from introspect.plugin import colormap, draw_boxes, grid, to_uint8, with_colorbar

#: One colour per part (cycled): distinct on photographs.
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60))


def _upscale(tile: np.ndarray, factor: int) -> np.ndarray:
    return np.repeat(np.repeat(tile, factor, axis=0), factor, axis=1) if factor > 1 else tile


def _draw(tile: np.ndarray, boxes, labels, factor: int) -> np.ndarray:
    for k, (box, label) in enumerate(zip(boxes, labels)):
        scaled = [int(v) * factor for v in box]
        tile = draw_boxes(tile, [scaled], [label] if label else None, color=PALETTE[k % len(PALETTE)],
                          width=max(1, min(2, factor)))
    return tile


def boxes_figure(result, min_size: int = 160) -> np.ndarray:
    """Each image (de-normalized) with its part boxes; a second row shows the first random trial.

    Args:
        result (CorrespondenceResult): the analysis.
        min_size (int): small inputs are enlarged (nearest neighbour, integer factor) to at least
            this many pixels on the longer side (default 160).

    Returns:
        np.ndarray: ``(H, W, 3)`` ``uint8``.
    """
    x = result.input.double()
    mean = torch.tensor(result.mean_std[0], dtype=torch.float64).view(-1, 1, 1)
    std = torch.tensor(result.mean_std[1], dtype=torch.float64).view(-1, 1, 1)
    n, _, h, w = x.shape
    factor = max(1, math.ceil(min_size / max(h, w)))
    tiles, labels = [], []
    pictures = [_upscale(to_uint8((x[i] * std + mean).clamp(0, 1), None), factor) for i in range(n)]
    for i in range(n):
        boxes = [result.boxes[p][i].tolist() for p in result.parts]
        tiles.append(_draw(pictures[i], boxes, result.parts, factor))
        labels.append(result.image_names[i])
    if result.random_boxes:
        for i in range(n):
            boxes = [result.random_boxes[p][0, i].tolist() for p in result.parts]
            tiles.append(_draw(pictures[i], boxes, [""] * len(boxes), factor))
            labels.append("random, trial 1")
    return grid(tiles, ncols=n, pad=4, labels=labels)


def pairs_figure(result, cell: int = 24) -> np.ndarray:
    """The per-pair matrices ``H / D`` as colour maps: one row per table row, one column per layer.

    The ``random`` row shows the mean matrix over trials and parts. Colours run from 0 to the
    largest value of the figure (viridis), with a colour bar.

    Args:
        result (CorrespondenceResult): the analysis.
        cell (int): pixels per matrix entry (default 24).

    Returns:
        np.ndarray: ``(H, W, 3)`` ``uint8``.
    """
    mats, labels = [], []
    for row in result.rows:
        for layer in result.layers:
            if row == "random":
                m = torch.cat([result.random_pairs[p][layer] for p in result.parts]).mean(0)
            else:
                m = result.pairs[row][layer]
            mats.append(m.numpy())
            labels.append(f"{row} @ {layer}\n{result.mean[row][layer]:.3g} ± {result.std[row][layer]:.3g}")
    vmax = max(float(m.max()) for m in mats) or 1.0
    tiles = [_upscale(colormap(m, "viridis", 0.0, vmax), cell) for m in mats]
    picture = grid(tiles, ncols=len(result.layers), pad=6, labels=labels)
    return with_colorbar(picture, "viridis", 0.0, vmax, "H / D")


__all__ = ["boxes_figure", "pairs_figure", "PALETTE"]
