"""Heat maps of attributions over the image, each with a colour bar.

Per image: ``signed_<i>.png`` (the sum over channels, blue negative, red positive, a range symmetric
about zero) and ``absolute_<i>.png`` (the sum of absolute values over channels, from zero), both
blended over the image in grey.
"""
from __future__ import annotations

import numpy as np
import torch

from introspect.plugin import heatmap_overlay, to_uint8, with_colorbar


def unnormalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """``C x H x W`` preprocessed image back to ``[0, 1]`` (when the normalization matches its channels)."""
    if len(mean) == x.shape[0] and len(std) == x.shape[0]:
        return x * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    return x


def heat_maps(result) -> dict[str, np.ndarray]:
    """``{file name: (H, W', 3) uint8}``: the signed and absolute map of every image."""
    out = {}
    for i in range(result.attribution.shape[0]):
        image = to_uint8(unnormalize(result.input[i].float(), result.mean, result.std), "minmax")
        gray = np.repeat(image.mean(2, keepdims=True).astype(np.uint8), 3, 2)
        a = result.attribution[i].double()
        signed = a.sum(0).numpy()
        bound = float(np.abs(signed).max()) or 1.0
        out[f"signed_{i}.png"] = with_colorbar(heatmap_overlay(gray, signed, 0.7, "bwr", -bound, bound),
                                               "bwr", -bound, bound, "attribution")
        magnitude = a.abs().sum(0).numpy()
        top = float(magnitude.max()) or 1.0
        out[f"absolute_{i}.png"] = with_colorbar(heatmap_overlay(gray, magnitude, 0.7, "jet", 0.0, top),
                                                 "jet", 0.0, top, "|attribution|")
    return out


__all__ = ["heat_maps", "unnormalize"]
