"""Pictures and tables of an invariance sweep: the plots of the paper's Fig. 5 and the CSV.

``distance_<layer>.png`` and ``probability.png`` have one curve per image against the transformation
value; ``figure.png`` is one row of Fig. 5: example transformed images (a row per image, a column per
value), then the distance plots of each layer and the probability plot side by side.
"""
from __future__ import annotations

import re

import numpy as np
import torch
from PIL import Image

from introspect.plugin import grid, line_plot, to_uint8
from introspect_invariance.transforms import is_identity, transform_images

#: Side of an example tile in ``figure.png``, and how many images and values it shows at most.
TILE, EXAMPLE_IMAGES, EXAMPLE_VALUES = 56, 5, 4
PLOT_SIZE, PANEL_SIZE = (600, 360), (420, 330)

TITLES = {"translate": "vertical translation", "scale": "scale", "rotate": "rotation"}


def _file_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "x"


def _value_text(result, value: float) -> str:
    if result.transform == "translate":
        return f"{value:+.4g} px" if value else "0 px"
    if result.transform == "scale":
        return f"x{value:.3g}"
    return f"{value:.4g} deg"


def _xlabel(result) -> str:
    return {"translate": "vertical shift (pixels, + is down)", "scale": "scale factor",
            "rotate": "rotation (degrees, counter-clockwise)"}[result.transform]


def _by_value(result) -> torch.Tensor:
    """Indices that put the values in increasing order (the plots need increasing x)."""
    return torch.sort(result.values, stable=True).indices


def distance_plot(result, i: int, size=PLOT_SIZE, legend: str = "right") -> np.ndarray:
    """The distance curves of layer ``i``, one per image (Fig. 5, columns 2 and 3)."""
    order = _by_value(result)
    series = {result.image_name(n): result.distance[n, order, i].numpy() for n in range(result.distance.shape[0])}
    title = f"{result.layer_title(i)}: distance to the original, {TITLES[result.transform]}"
    return line_plot(result.values[order].numpy(), series, title=title, xlabel=_xlabel(result),
                     ylabel="Euclidean distance", size=size, legend=legend)


def probability_plot(result, size=PLOT_SIZE, legend: str = "right") -> np.ndarray:
    """The probability of each image's target class against the value (Fig. 5, column 4)."""
    order = _by_value(result)
    series = {f"{result.image_name(n)} ({name})": result.prob[n, order].numpy()
              for n, name in enumerate(result.target_names)}
    which = "true class" if result.targets_given else "top class of the original"
    return line_plot(result.values[order].numpy(), series, title=f"p({which}), {TITLES[result.transform]}",
                     xlabel=_xlabel(result), ylabel="probability", size=size, ylim=(0.0, 1.0), legend=legend)


def example_values(result) -> list[int]:
    """Indices of up to 4 non-identity values to show: the ends and halves of a translation range,
    an eighth and quarter turns of a rotation, evenly spread scales (the nearest values of the sweep)."""
    v = result.values.numpy()
    lo, hi = float(v.min()), float(v.max())
    if result.transform == "translate":
        wanted = [lo, lo / 2, hi / 2, hi] if lo < 0 < hi else np.linspace(lo, hi, 4).tolist()
    elif result.transform == "rotate":
        wanted = [lo + (hi - lo) * k for k in (1 / 8, 1 / 4, 1 / 2, 3 / 4)]
    else:
        wanted = np.linspace(lo, hi, 5)[1:].tolist()
    # the nearest value of the sweep, the larger one on a tie (so -4.5 and 4.5 give -5 and 5)
    picks = [min(range(len(v)), key=lambda j: (abs(v[j] - w), -abs(v[j]))) for w in wanted]
    picks = [j for j in picks if not is_identity(result.transform, float(v[j]))]
    return list(dict.fromkeys(picks))[:EXAMPLE_VALUES]


def _tile(result, image: torch.Tensor) -> np.ndarray:
    c = image.shape[0]
    mean = torch.tensor(result.mean[:c], dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(result.std[:c], dtype=torch.float32).view(-1, 1, 1)
    pic = Image.fromarray(to_uint8((image.float() * std + mean).clamp(0, 1), None))
    small = max(pic.size) < TILE
    return np.asarray(pic.resize((TILE, TILE), Image.Resampling.NEAREST if small else Image.Resampling.BILINEAR)).copy()


def examples(result) -> np.ndarray:
    """Up to 5 images (rows): the original, then transformed by up to 4 values of the sweep (columns)."""
    picks = example_values(result)
    values = [float(result.values[j]) for j in picks]
    tiles, labels = [], []
    for n in range(min(EXAMPLE_IMAGES, result.input.shape[0])):
        batch = result.input[n:n + 1].expand(len(picks), *result.input.shape[1:])
        moved = transform_images(batch, result.transform, values, result.fill, result.mean, result.std)
        tiles.append(_tile(result, result.input[n]))
        labels.append("original")
        for k, value in enumerate(values):
            tiles.append(_tile(result, moved[k]))
            labels.append(_value_text(result, value))
    return grid(tiles, ncols=len(picks) + 1, pad=3, labels=labels)


def pictures(result) -> dict[str, np.ndarray]:
    """Every picture of an :class:`~introspect_invariance.method.InvarianceResult`, by file name.

    Returns:
        dict[str, np.ndarray]: ``distance_<layer>.png`` per layer (the alias, e.g. ``conv1``, when
        the layer has one), ``probability.png`` and ``figure.png``.
    """
    out = {f"distance_{_file_part(result.layer_title(i))}.png": distance_plot(result, i)
           for i in range(len(result.layers))}
    out["probability.png"] = probability_plot(result)
    row = [examples(result)]
    row += [distance_plot(result, i, PANEL_SIZE, "none") for i in range(len(result.layers))]
    row.append(probability_plot(result, (PANEL_SIZE[0] + 160, PANEL_SIZE[1])))
    titles = [f"(a) {TITLES[result.transform]}: example images"]
    titles += [f"({chr(ord('b') + i)}) layer {result.layer_title(i)}" for i in range(len(result.layers))]
    titles.append(f"({chr(ord('b') + len(result.layers))}) class probability")
    out["figure.png"] = side_by_side(row, titles)
    return out


def side_by_side(panels: list[np.ndarray], titles: list[str], gap: int = 12) -> np.ndarray:
    """``panels`` in one row, each as wide as itself, centred vertically, a title under each, on white."""
    height = max(p.shape[0] for p in panels)
    parts = []
    for p, t in zip(panels, titles):
        above = (height - p.shape[0]) // 2
        tall = np.pad(p, ((above, height - p.shape[0] - above), (0, 0), (0, 0)), constant_values=255)
        parts.append(np.pad(grid([tall], ncols=1, pad=0, labels=[t]), ((0, 0), (gap, 0), (0, 0)),
                            constant_values=255))
    return np.pad(np.concatenate(parts, axis=1), ((gap // 2, gap // 2), (0, gap), (0, 0)), constant_values=255)




__all__ = ["pictures", "distance_plot", "probability_plot", "examples", "example_values"]
