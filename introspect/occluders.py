"""What an occluder puts over the image: one convention for occlusion and correspondence.

An occluded image is ``x * (1 - mask) + fill * mask`` where ``fill = fill_image(x, kind, mean, std)``
has the shape of ``x`` (in the model's normalized input space):

=========  ==================================================================================
``gray``   pixel value 0.5 before normalization (the paper's grey square; the default)
``mean``   the normalization mean, i.e. 0 in the model's input
``zero``   black: pixel value 0 before normalization
``blur``   the image itself, blurred with a Gaussian (sigma ``blur_sigma`` pixels)
=========  ==================================================================================
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from introspect.errors import IntrospectError
from introspect.imagenet import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    import torch

FILLS = ("gray", "mean", "zero", "blur")


def fill_image(x: torch.Tensor, kind: str = "gray", mean: Sequence[float] = IMAGENET_MEAN,
               std: Sequence[float] = IMAGENET_STD, blur_sigma: float = 8.0) -> torch.Tensor:
    """The values an occluder takes at every pixel, shaped like ``x``.

    Args:
        x (Tensor): ``N x C x H x W`` or ``C x H x W`` normalized images.
        kind (str): one of ``gray``, ``mean``, ``zero``, ``blur`` (see the module docstring).
        mean, std (sequence of float): the per-channel normalization of ``x``.
        blur_sigma (float): Gaussian sigma in pixels for ``blur``.

    Returns:
        Tensor: shaped like ``x``, same dtype and device.

    Example:
        >>> fill = fill_image(x, "gray", meta.mean, meta.std)
        >>> occluded = x.clone(); occluded[..., 10:60, 20:70] = fill[..., 10:60, 20:70]
    """
    import torch

    if kind not in FILLS:
        raise IntrospectError(f"unknown fill {kind!r}; use one of {', '.join(FILLS)}")
    if kind == "mean":
        return torch.zeros_like(x)
    if kind == "blur":  # needs no normalization
        return gaussian_blur(x, blur_sigma)
    c = x.shape[-3]
    mean_t = torch.as_tensor(list(mean), dtype=x.dtype, device=x.device)
    std_t = torch.as_tensor(list(std), dtype=x.dtype, device=x.device)
    if mean_t.numel() == 1:
        mean_t, std_t = mean_t.expand(c), std_t.expand(c)
    if mean_t.numel() != c:
        raise IntrospectError(
            f"normalization has {mean_t.numel()} channels but the image has {c}; check the model's mean/std"
        )
    value = 0.5 if kind == "gray" else 0.0
    return ((value - mean_t) / std_t).reshape(c, 1, 1).expand_as(x).clone()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``N x C x H x W`` (or ``C x H x W``) images, reflect padding."""
    import torch
    import torch.nn.functional as F

    squeeze = x.dim() == 3
    if squeeze:
        x = x.unsqueeze(0)
    radius = max(1, int(round(3 * sigma)))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    out = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    out = F.conv2d(out, k.reshape(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="reflect")
    out = F.conv2d(out, k.reshape(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return out.squeeze(0) if squeeze else out


def occlude(x: torch.Tensor, box: tuple[int, int, int, int], fill: torch.Tensor) -> torch.Tensor:
    """A copy of ``x`` with ``box = (y0, x0, y1, x1)`` (end-exclusive) replaced by ``fill``'s pixels."""

    y0, x0, y1, x1 = box
    out = x.clone()
    out[..., y0:y1, x0:x1] = fill[..., y0:y1, x0:x1]
    return out


__all__ = [
    "FILLS", "fill_image", "gaussian_blur", "occlude"
]
