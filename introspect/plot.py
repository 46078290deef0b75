"""Line plots drawn with PIL (no matplotlib): curves such as the paper's Fig. 5 invariance plots.

:func:`line_plot` draws one or more series against a shared x axis with ticks, axis labels, a title
and a legend, and returns an ``(H, W, 3)`` ``uint8`` array for :meth:`introspect.render.OutputDir.save_png`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from introspect.errors import IntrospectError
from introspect.render import _as_numpy, _font, text_size

#: Distinguishable line colours (Tableau 10), used in order.
PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (steps of 1, 2 or 5 times a power of ten) covering ``[lo, hi]``.

    Example:
        >>> nice_ticks(0.0, 1.0)
        [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise IntrospectError(f"axis limits must be finite, got {lo} and {hi}; drop NaN or inf values")
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def _label(v: float) -> str:
    return f"{v:.4g}"


def _limits(values: np.ndarray, given: tuple[float, float] | None) -> tuple[float, float]:
    if given is not None:
        return float(given[0]), float(given[1])
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    ticks = nice_ticks(lo, hi)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else hi - lo
    # widen to the nearest ticks outside the data
    return math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step


def line_plot(x: Any, series: Mapping[str, Any], *, title: str = "", xlabel: str = "", ylabel: str = "",
              size: tuple[int, int] = (480, 320), ylim: tuple[float, float] | None = None,
              markers: bool = True, legend: str = "inside") -> np.ndarray:
    """Draw curves ``series[name]`` against ``x`` with axes, ticks, labels and a legend.

    Args:
        x (array-like): ``(N,)`` x values, increasing.
        series (mapping str -> array-like): legend label -> ``(N,)`` y values; NaN leaves a gap.
        title, xlabel, ylabel (str): text above the plot, under the x axis, above the y axis.
        size (tuple[int, int]): ``(width, height)`` of the picture in pixels (default 480 x 320).
        ylim (tuple[float, float] | None): y range, ``low < high``, finite; default the data's range
            rounded to ticks. Curves are clipped to the axes.
        markers (bool): draw a dot at every point (default True).
        legend (str): ``"inside"`` (default, the top right corner of the axes), ``"right"`` (a column
            right of the axes, which never covers a curve) or ``"none"``.

    Returns:
        np.ndarray: ``(height, width, 3)`` ``uint8`` on white.

    Example:
        >>> img = line_plot([0, 1, 2], {"conv1": [0, 1.5, 3.0], "fc7": [0, 0.2, 0.3]},
        ...                 title="vertical translation", xlabel="pixels", ylabel="distance")
        >>> img.shape
        (320, 480, 3)
    """
    xs, ys = _checked_series(x, series)
    _check_options(size, ylim, legend)
    axes = _Axes.fit(xs, ys, size, ylim, legend, bool(title), bool(xlabel), bool(ylabel))
    canvas = Image.new("RGB", axes.size, (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    _draw_frame(draw, axes, title, xlabel, ylabel)
    entries = _draw_curves(canvas, axes, xs, ys, markers)
    if legend != "none":
        _draw_legend(draw, axes, entries, legend)
    return np.asarray(canvas).copy()


_INK, _GREY = (0, 0, 0), (225, 225, 225)


def _checked_series(x: Any, series: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``x`` and every series as float64 vectors of one length; anything else is one error line."""
    xs = _as_numpy(x).astype(np.float64).reshape(-1)
    if xs.size == 0:
        raise IntrospectError("line_plot needs at least one x value; pass a non-empty x")
    if not series:
        raise IntrospectError("line_plot needs at least one series; pass {name: values}")
    ys = {}
    for name, values in series.items():
        v = _as_numpy(values).astype(np.float64).reshape(-1)
        if v.shape != xs.shape:
            raise IntrospectError(f"series {name!r} has {v.size} values for {xs.size} x values; give one y per x")
        ys[name] = v
    return xs, ys


def _check_options(size: tuple[int, int], ylim: tuple[float, float] | None, legend: str) -> None:
    if legend not in ("inside", "right", "none"):
        raise IntrospectError(f"unknown legend placement {legend!r}; use inside, right or none")
    if ylim is not None and not (len(ylim) == 2 and all(math.isfinite(float(v)) for v in ylim)
                                 and float(ylim[0]) < float(ylim[1])):
        raise IntrospectError(f"ylim must be (low, high) with finite low < high, got {ylim!r}; e.g. ylim=(0, 1)")
    width, height = size
    if width < 160 or height < 120:
        raise IntrospectError(f"plot size {size} is too small; use at least (160, 120)")


@dataclass
class _Axes:
    """Where the axes box lies in the picture (pixels), the data ranges it shows, and their ticks."""

    size: tuple[int, int]
    left: float
    top: float
    right: float
    bottom: float
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    x_ticks: list[float]
    y_ticks: list[float]
    legend_width: int

    @classmethod
    def fit(cls, xs: np.ndarray, ys: dict[str, np.ndarray], size: tuple[int, int], ylim, legend: str,
            title: bool, xlabel: bool, ylabel: bool) -> _Axes:
        """The axes box that leaves room for tick labels, title, axis labels and a legend on the right."""
        width, height = size
        x_lo, x_hi = float(xs.min()), float(xs.max())
        if x_hi <= x_lo:
            x_lo, x_hi = x_lo - 0.5, x_hi + 0.5
        y_lo, y_hi = _limits(np.concatenate(list(ys.values())), ylim)
        _, th = text_size("0")
        y_ticks = [t for t in nice_ticks(y_lo, y_hi) if y_lo - 1e-12 <= t <= y_hi + 1e-12]
        x_ticks = [t for t in nice_ticks(x_lo, x_hi, 6) if x_lo - 1e-12 <= t <= x_hi + 1e-12]
        left = 10 + max(text_size(_label(t))[0] for t in y_ticks) + 6
        top = 8 + (th + 6 if title else 0) + (th + 4 if ylabel else 0)
        legend_width = max(text_size(str(n))[0] for n in ys) + 24
        right = width - 12 - (legend_width if legend == "right" else 0)
        bottom = height - (8 + th + 6 + (th + 4 if xlabel else 0))
        if right - left < 40 or bottom - top < 40:
            raise IntrospectError(f"plot size {size} leaves no room for the axes; make it larger")
        return cls((int(width), int(height)), left, top, right, bottom, (x_lo, x_hi), (y_lo, y_hi), x_ticks, y_ticks,
                   legend_width)

    def px(self, v: float) -> float:
        x_lo, x_hi = self.x_range
        return self.left + (v - x_lo) / (x_hi - x_lo) * (self.right - self.left)

    def py(self, v: float) -> float:
        y_lo, y_hi = self.y_range
        return self.bottom - (v - y_lo) / (y_hi - y_lo) * (self.bottom - self.top)


def _draw_frame(draw: ImageDraw.ImageDraw, axes: _Axes, title: str, xlabel: str, ylabel: str) -> None:
    """Grid lines, ticks and their labels, the axes box, the title and the axis labels."""
    width, height = axes.size
    left, top, right, bottom = axes.left, axes.top, axes.right, axes.bottom
    _, th = text_size("0")
    font = _font()
    for t in axes.y_ticks:
        y = axes.py(t)
        draw.line([(left, y), (right, y)], fill=_GREY)
        w, _ = text_size(_label(t))
        draw.text((left - 4 - w, y - th / 2), _label(t), fill=_INK, font=font)
    for t in axes.x_ticks:
        x0 = axes.px(t)
        draw.line([(x0, bottom), (x0, bottom + 3)], fill=_INK)
        w, _ = text_size(_label(t))
        draw.text((x0 - w / 2, bottom + 5), _label(t), fill=_INK, font=font)
    draw.rectangle([left, top, right, bottom], outline=_INK)
    if title:
        w, _ = text_size(title)
        draw.text(((width - w) / 2, 6), title, fill=_INK, font=font)
    if ylabel:
        draw.text((6, top - th - 4), ylabel, fill=_INK, font=font)
    if xlabel:
        w, _ = text_size(xlabel)
        draw.text(((left + right - w) / 2, height - th - 6), xlabel, fill=_INK, font=font)


def _draw_curves(canvas: Image.Image, axes: _Axes, xs: np.ndarray, ys: dict[str, np.ndarray],
                 markers: bool) -> list[tuple[str, tuple[int, int, int]]]:
    """Every series as a line (broken at NaN) with optional dots; returns the legend entries.

    The curves go on their own layer, pasted inside the axes (and the 3 pixels of a marker around
    them) only: values outside ``ylim`` are clipped."""
    curves = Image.new("RGBA", axes.size, (0, 0, 0, 0))
    pen = ImageDraw.Draw(curves)
    entries = []
    for i, (name, v) in enumerate(ys.items()):
        color = PALETTE[i % len(PALETTE)]
        points = [(axes.px(a), axes.py(b)) if np.isfinite(b) else None for a, b in zip(xs, v)]
        run: list = []
        for p in points + [None]:
            if p is None:
                if len(run) > 1:
                    pen.line(run, fill=color, width=2)
                run = []
            else:
                run.append(p)
        if markers:
            for p in points:
                if p is not None:
                    pen.ellipse([p[0] - 2.5, p[1] - 2.5, p[0] + 2.5, p[1] + 2.5], fill=color)
        entries.append((str(name), color))
    box = (int(axes.left) - 3, int(axes.top) - 3, int(axes.right) + 4, int(axes.bottom) + 4)
    inside = curves.crop(box)
    canvas.paste(inside, box[:2], inside)
    return entries


def _draw_legend(draw: ImageDraw.ImageDraw, axes: _Axes, entries: list, legend: str) -> None:
    """A line of each series' colour and its name: in the top right corner of the axes, or right of them."""
    _, th = text_size("0")
    font = _font()
    for i, (name, color) in enumerate(entries):
        y = axes.top + 6 + i * (th + 4)
        x0 = axes.right - axes.legend_width - 4 if legend == "inside" else axes.right + 10
        draw.line([(x0, y + th / 2), (x0 + 14, y + th / 2)], fill=color, width=2)
        draw.text((x0 + 18, y), name, fill=_INK, font=font)


def table_image(header: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> np.ndarray:
    """A table of text as a picture (for figures such as the paper's Table 7).

    Args:
        header (sequence of str): column titles.
        rows (sequence of sequences): cells, converted with ``str``; every row as long as ``header``.
        title (str): a line above the table.

    Returns:
        np.ndarray: ``(H, W, 3)`` ``uint8``, black text and rules on white.
    """
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    if any(len(r) != len(header) for r in cells):
        raise IntrospectError("every table row needs one cell per column; fix the row lengths")
    _, th = text_size("0")
    widths = [max(text_size(r[j])[0] for r in cells) + 16 for j in range(len(header))]
    row_h = th + 8
    top = th + 10 if title else 4
    width = max(sum(widths) + 8, text_size(title)[0] + 8 if title else 0)
    height = top + row_h * len(cells) + 6
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font()
    if title:
        draw.text((4, 4), title, fill=(0, 0, 0), font=font)
    for i, r in enumerate(cells):
        y = top + i * row_h
        x = 4
        for j, text in enumerate(r):
            w, _ = text_size(text)
            at = x + 8 if j == 0 else x + widths[j] - 8 - w  # first column left, numbers right
            draw.text((at, y + 4), text, fill=(0, 0, 0), font=font)
            x += widths[j]
        if i == 0:
            draw.line([(4, y + row_h), (4 + sum(widths), y + row_h)], fill=(0, 0, 0))
    return np.asarray(canvas).copy()


__all__ = ["line_plot", "table_image", "nice_ticks", "PALETTE"]
