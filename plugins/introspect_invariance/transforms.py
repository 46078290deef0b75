"""The transformations of the paper's Fig. 5, applied to preprocessed input tensors.

Each transformation is one parameter per image, taken about the image centre:

=============  ================================================  ========  =================
name           parameter                                         identity  paper (224 x 224)
=============  ================================================  ========  =================
``translate``  vertical shift in input pixels, positive is down  ``0``     -60 .. 60 pixels
``scale``      zoom factor: above 1 enlarges (and crops), below  ``1``     1 .. 1.8
               1 shrinks
``rotate``     degrees, positive turns counter-clockwise         ``0``     0 .. 360 degrees
=============  ================================================  ========  =================

Resampling is bilinear (``torch.nn.functional.grid_sample`` on an exact affine grid: pixel centres,
``align_corners=False``), in float64, then cast back to the input's dtype. Pixels that the
transformed image does not cover take the ``fill`` of :func:`introspect.occluders.fill_image` at that
place: by default ``mean``, the normalization mean, which is 0 in the model's input. Integer
translations and rotations by multiples of 90 degrees move pixel centres onto pixel centres, so they
equal slicing and ``torch.rot90`` (to about 1e-14 before the cast, i.e. to the last bit of float32).
Without a fill image, bilinear resampling here equals ``torchvision.transforms.v2.functional.affine``
and ``rotate`` (zero padding, i.e. ``fill="mean"``) to float32 rounding.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from introspect.plugin import FILLS, IMAGENET_MEAN, IMAGENET_STD, IntrospectError, closest, fill_image

#: Transformation name -> the parameter value that leaves the image unchanged.
IDENTITY = {"translate": 0.0, "scale": 1.0, "rotate": 0.0}
TRANSFORMS = tuple(IDENTITY)

#: Units of each parameter, for axis labels and messages.
UNITS = {"translate": "pixels", "scale": "factor", "rotate": "degrees"}

#: The paper's input side, and its ranges: translate -60..60 px (step 10), scale 1..1.8, rotate 0..360.
PAPER_INPUT = 224
PAPER_SHIFT, PAPER_SHIFT_STEP = 60, 10


def check_transform(transform: str) -> str:
    """``transform`` if it is one of :data:`TRANSFORMS`, else a one-line error with the choices."""
    if transform not in IDENTITY:
        raise IntrospectError(f"unknown transform {transform!r}{closest(str(transform), TRANSFORMS)}; "
                              f"use one of {', '.join(TRANSFORMS)}")
    return transform


def default_values(transform: str, hw: tuple[int, int]) -> torch.Tensor:
    """The paper's range for ``transform``, scaled to an input of ``hw = (H, W)`` pixels.

    ``translate``: whole pixels from ``-round(60 H / 224)`` to ``+round(60 H / 224)`` in steps of
    ``max(1, round(10 H / 224))`` (-60..60 by 10 at 224; -9..9 by 1 at 32). ``scale``: 1.0 to 1.8 by
    0.1. ``rotate``: 0 to 360 degrees by 10. Every range holds the identity.

    Example:
        >>> default_values("translate", (224, 224)).tolist()[:3]
        [-60.0, -50.0, -40.0]
    """
    check_transform(transform)
    if transform == "translate":
        step = max(1, round(PAPER_SHIFT_STEP * hw[0] / PAPER_INPUT))
        limit = max(step, round(PAPER_SHIFT * hw[0] / PAPER_INPUT) // step * step)
        return torch.arange(-limit, limit + 1, step, dtype=torch.float64)
    if transform == "scale":
        return torch.linspace(1.0, 1.8, 9, dtype=torch.float64)
    return torch.arange(0, 361, 10, dtype=torch.float64)


def is_identity(transform: str, value: float) -> bool:
    """Whether ``value`` leaves the image unchanged (for ``rotate``: any multiple of 360 degrees)."""
    if transform == "rotate":
        return float(value) % 360.0 == 0.0
    return float(value) == IDENTITY[transform]


def _cos_sin(degrees: float) -> tuple[float, float]:
    """Cosine and sine, exact at multiples of 90 degrees (so quarter turns land on pixel centres)."""
    quarter = degrees / 90.0
    if quarter == round(quarter):
        return [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)][int(round(quarter)) % 4]
    r = math.radians(degrees)
    return math.cos(r), math.sin(r)


def source_matrix(transform: str, value: float) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """The 2 x 3 map from an output pixel to where it is read in the input, in pixel units.

    Coordinates are ``(column, row)`` offsets from the image centre, rows pointing down: the
    output pixel at ``u`` takes the input's value at ``M @ (u, 1)``.
    """
    check_transform(transform)
    v = float(value)
    if transform == "translate":
        return (1.0, 0.0, 0.0), (0.0, 1.0, -v)
    if transform == "scale":
        if not v > 0:
            raise IntrospectError(f"scale factors must be positive, got {value}; e.g. 1.2")
        return (1.0 / v, 0.0, 0.0), (0.0, 1.0 / v, 0.0)
    c, s = _cos_sin(v)
    # a visual counter-clockwise turn by v (rows down) maps (x, y) -> (c x + s y, -s x + c y); invert it
    return (c, -s, 0.0), (s, c, 0.0)


def _theta(transform: str, values: Sequence[float], hw: tuple[int, int]) -> torch.Tensor:
    """``V x 2 x 3`` ``affine_grid`` matrices (normalized coordinates) for ``values``."""
    h, w = hw
    half = torch.tensor([w / 2.0, h / 2.0], dtype=torch.float64)
    out = []
    for v in values:
        m = torch.tensor(source_matrix(transform, v), dtype=torch.float64)
        # normalized n = u / half: n_src = half^-1 (M_lin (half n) + b)
        lin = m[:, :2] * half[None, :] / half[:, None]
        out.append(torch.cat([lin, (m[:, 2] / half)[:, None]], 1))
    return torch.stack(out)


def transform_images(x: torch.Tensor, transform: str, values: Sequence[float], fill: str = "mean",
                     mean: Sequence[float] = IMAGENET_MEAN,
                     std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """Transformed copies of images: ``out[i]`` is ``x[i]`` transformed by ``values[i]``.

    Args:
        x (Tensor): ``B x C x H x W`` normalized images (one per value).
        transform (str): ``translate``, ``scale`` or ``rotate`` (see the module docstring).
        values (sequence of float): ``B`` parameters, one per image.
        fill (str): what uncovered pixels hold: ``mean`` (default, 0 in the normalized input),
            ``gray``, ``zero`` or ``blur`` (see :func:`introspect.occluders.fill_image`).
        mean, std (sequence of float): the normalization of ``x`` (for ``gray`` and ``zero``).

    Returns:
        Tensor: ``B x C x H x W``, same dtype and device as ``x``. Identity values return the image
        itself, bit for bit.

    Example:
        >>> x = torch.randn(1, 3, 32, 32)
        >>> torch.allclose(transform_images(x, "rotate", [90.0]), torch.rot90(x, 1, (-2, -1)), atol=1e-5)
        True
    """
    check_transform(transform)
    values = [float(v) for v in values]
    if x.dim() != 4 or x.shape[0] != len(values):
        raise IntrospectError(f"transform_images needs B x C x H x W images and B values, got shape "
                              f"{tuple(x.shape)} and {len(values)} values; give one value per image")
    if fill not in FILLS:
        raise IntrospectError(f"unknown fill {fill!r}; use one of {', '.join(FILLS)}")
    if not values:  # an empty batch
        return x.clone()
    hw = (int(x.shape[-2]), int(x.shape[-1]))
    exact = x.to(torch.float64)
    theta = _theta(transform, values, hw).to(device=x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    inside = torch.ones_like(exact[:, :1])
    moved = F.grid_sample(torch.cat([exact, inside], 1), grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)
    image, covered = moved[:, :-1], moved[:, -1:]
    # the mean fill is 0 whatever the normalization (so it needs no mean/std of the image's channels)
    background = torch.zeros_like(exact) if fill == "mean" else fill_image(exact, fill, mean, std)
    out = (image + (1.0 - covered) * background).to(x.dtype)
    keep = torch.tensor([is_identity(transform, v) for v in values], device=x.device)
    return torch.where(keep[:, None, None, None], x, out)


__all__ = ["TRANSFORMS", "IDENTITY", "UNITS", "check_transform", "default_values", "is_identity",
           "source_matrix", "transform_images"]
