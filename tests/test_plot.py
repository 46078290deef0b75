"""``introspect.plot``: ticks, where points land in the picture, clipping, legends and bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest

from introspect.errors import IntrospectError
from introspect.plot import PALETTE, line_plot, nice_ticks, table_image


def frame(img: np.ndarray) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of the black axes rectangle: the long all-black lines."""
    black = (img == 0).all(axis=2)
    cols = np.flatnonzero(black.sum(0) > 0.4 * img.shape[0])
    rows = np.flatnonzero(black.sum(1) > 0.4 * img.shape[1])
    return int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())


def pixels(img: np.ndarray, color) -> tuple[np.ndarray, np.ndarray]:
    return np.nonzero((img == np.array(color, np.uint8)).all(axis=2))


@pytest.mark.parametrize("lo, hi, count", [(0.0, 1.0, 5), (-60.0, 60.0, 6), (0.013, 0.0171, 5), (3.0, 1e6, 5)])
def test_nice_ticks_are_round_evenly_spaced_and_inside(lo, hi, count):
    ticks = nice_ticks(lo, hi, count)
    assert len(ticks) >= 2 and all(lo - 1e-12 <= t <= hi + 1e-12 for t in ticks)
    steps = np.diff(ticks)
    np.testing.assert_allclose(steps, steps[0], rtol=1e-9)
    mantissa = steps[0] / 10 ** math.floor(math.log10(steps[0]))
    assert min(abs(mantissa - m) for m in (1, 2, 5, 10)) < 1e-9
    assert steps[0] <= hi - lo  # never a single tick for a real range
    assert nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]


def test_points_land_where_their_values_say():
    img = line_plot([0, 1, 2, 3, 4], {"a": [0, 1, 2, 3, 4]}, ylim=(0, 4), markers=False, size=(400, 300))
    left, top, right, bottom = frame(img)
    ys, xs = pixels(img, PALETTE[0])
    inside = xs < right - 40  # the legend swatch is at the top right corner
    # the diagonal from (x=0, y=0) at the bottom left corner to (x=4, y=4) at the top right corner
    for row, col in zip(ys[inside], xs[inside]):
        expect = bottom - (col - left) / (right - left) * (bottom - top)
        assert abs(row - expect) <= 2.5


def test_values_outside_ylim_are_clipped_to_the_axes():
    img = line_plot([0, 1, 2], {"a": [-5.0, 0.5, 5.0]}, ylim=(0, 1), legend="none")
    left, top, right, bottom = frame(img)
    ys, xs = pixels(img, PALETTE[0])
    assert len(ys) > 0
    assert ys.min() >= top - 3 and ys.max() <= bottom + 3 and xs.min() >= left - 3 and xs.max() <= right + 3


def test_right_legend_sits_beside_the_axes_and_none_draws_no_legend():
    series = {"first": [0, 1, 2], "second": [2, 1, 0]}
    inside = line_plot([0, 1, 2], series, legend="inside")
    right = line_plot([0, 1, 2], series, legend="right")
    hidden = line_plot([0, 1, 2], series, legend="none")
    box_inside, box_right = frame(inside), frame(right)
    assert box_right[2] < box_inside[2] - 40  # the axes give way to the legend column
    for k in (0, 1):
        _, xs = pixels(right, PALETTE[k])
        assert (xs > box_right[2] + 5).any()  # the swatch is right of the axes
        _, xs = pixels(inside, PALETTE[k])
        assert not (xs > box_inside[2] + 3).any()
    # without a legend the only coloured pixels are the curves: fewer than with the swatches
    assert len(pixels(hidden, PALETTE[0])[0]) < len(pixels(inside, PALETTE[0])[0])


@pytest.mark.parametrize("kwargs, message", [
    ({"ylim": (1.0, 1.0)}, "ylim must be"),
    ({"ylim": (2.0, 1.0)}, "ylim must be"),
    ({"ylim": (0.0, float("inf"))}, "ylim must be"),
    ({"legend": "left"}, "unknown legend placement"),
    ({"size": (100, 100)}, "too small"),
])
def test_bad_arguments_raise_introspect_errors(kwargs, message):
    with pytest.raises(IntrospectError, match=message):
        line_plot([0, 1], {"a": [0, 1]}, **kwargs)


def test_series_length_and_empty_input_are_checked():
    with pytest.raises(IntrospectError, match="2 values for 3 x values"):
        line_plot([0, 1, 2], {"a": [0, 1]})
    with pytest.raises(IntrospectError, match="at least one series"):
        line_plot([0, 1], {})


def test_nan_leaves_a_gap_and_constant_series_still_plot():
    whole = line_plot([0, 1, 2, 3], {"a": [1, 2, 3, 4]}, markers=False, legend="none")
    gap = line_plot([0, 1, 2, 3], {"a": [1, 2, np.nan, 4]}, markers=False, legend="none")
    assert len(pixels(gap, PALETTE[0])[0]) < 0.6 * len(pixels(whole, PALETTE[0])[0])
    flat = line_plot([0, 1, 2], {"a": [3.0, 3.0, 3.0]}, legend="none", markers=False)
    ys, _ = pixels(flat, PALETTE[0])
    assert ys.max() - ys.min() <= 2  # one horizontal line


def test_table_image_has_a_row_per_line_and_checks_lengths():
    one = table_image(["layer", "error"], [["conv1", "0.1"]])
    three = table_image(["layer", "error"], [["conv1", "0.1"], ["conv2", "0.2"], ["fc7", "0.3"]], title="t")
    assert three.shape[0] > one.shape[0] and one.dtype == np.uint8
    with pytest.raises(IntrospectError, match="one cell per column"):
        table_image(["a", "b"], [["x"]])
