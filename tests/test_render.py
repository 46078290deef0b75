"""Tests for introspect.render: display scaling, colormaps, figure layout and all-or-nothing output."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from introspect.errors import IntrospectError
from introspect.render import (
    COLORMAPS,
    colorbar,
    colormap,
    draw_boxes,
    grid,
    heatmap_overlay,
    text_size,
    to_uint8,
    with_colorbar,
)


def _one_line(excinfo, *words):
    message = str(excinfo.value)
    assert "\n" not in message and ";" in message
    for word in words:
        assert word in message, message


# --------------------------------------------------------------------------------------------------
# to_uint8
# --------------------------------------------------------------------------------------------------
def test_minmax_uses_the_joint_range():
    x = torch.tensor([[[0.0, 2.0]], [[1.0, 4.0]], [[-4.0, 0.0]]])  # (3, 1, 2)
    got = to_uint8(x, "minmax")
    assert got.shape == (1, 2, 3) and got.dtype == np.uint8
    expected = np.round((x.numpy() + 4) / 8 * 255).astype(np.uint8).transpose(1, 2, 0)
    np.testing.assert_array_equal(got, expected)


def test_symmetric_maps_zero_to_grey():
    x = torch.tensor([[-2.0, -1.0, 0.0, 1.0, 0.5]])
    got = to_uint8(x, "symmetric")[0, :, 0]
    np.testing.assert_array_equal(got, np.round((x[0].numpy() / 4 + 0.5) * 255).astype(np.uint8))
    assert got[2] == 128 and got[0] == 0


def test_constant_and_nan_images_do_not_produce_nan():
    assert (to_uint8(torch.full((3, 4, 4), 7.0), "minmax") == 0).all()
    assert (to_uint8(torch.zeros(4, 4), "symmetric") == 128).all()
    x = torch.tensor([[float("nan"), 1.0], [0.0, float("inf")]])
    got = to_uint8(x, "minmax")
    np.testing.assert_array_equal(got[..., 0], [[0, 255], [0, 0]])


def test_none_clips_and_gray_is_repeated():
    got = to_uint8(np.array([[-0.5, 0.5, 2.0]]), None)
    np.testing.assert_array_equal(got[0], [[0] * 3, [128] * 3, [255] * 3])
    with pytest.raises(IntrospectError) as excinfo:
        to_uint8(torch.zeros(2, 4, 4))
    _one_line(excinfo, "(2, 4, 4)")
    with pytest.raises(IntrospectError):
        to_uint8(torch.zeros(3, 4, 4), "log")


# --------------------------------------------------------------------------------------------------
# colormaps
# --------------------------------------------------------------------------------------------------
def test_colormap_endpoints():
    ends = np.array([[0.0, 1.0]])
    np.testing.assert_array_equal(colormap(ends, "jet")[0], [[0, 0, 128], [128, 0, 0]])
    np.testing.assert_array_equal(colormap(ends, "viridis")[0], [[68, 1, 84], [253, 231, 37]])
    np.testing.assert_array_equal(colormap(ends, "gray")[0], [[0, 0, 0], [255, 255, 255]])
    signed = colormap(np.array([[-1.0, 0.0, 1.0]]), "bwr")[0].astype(int)
    np.testing.assert_allclose(signed, [[0, 0, 255], [255, 255, 255], [255, 0, 0]], atol=2)


def test_jet_middle_matches_matplotlib_definition():
    # matplotlib's jet: r rises from (0.35, 0) to (0.66, 1); g = 1 on [0.375, 0.64];
    # b falls from (0.34, 1) to (0.65, 0). 0.5 is looked up at table entry 128, i.e. t = 128/255.
    t = 128 / 255
    r, b = (t - 0.35) / 0.31, 1 - (t - 0.34) / 0.31
    got = colormap(np.array([[0.0, 0.5, 1.0]]), "jet")[0, 1]
    np.testing.assert_allclose(got, [r * 255, 255, b * 255], atol=1)


def test_colormap_range_and_errors():
    values = np.array([[0.0, 5.0, 10.0]])
    clipped = colormap(values, "gray", vmin=2.5, vmax=5.0)[0, :, 0]
    np.testing.assert_array_equal(clipped, [0, 255, 255])
    assert (colormap(np.full((2, 2), 3.0), "gray") == 0).all()
    assert (np.diff(COLORMAPS["gray"][:, 0].astype(int)) >= 0).all()
    assert colormap(torch.rand(5, 6), "viridis").shape == (5, 6, 3)
    with pytest.raises(IntrospectError) as excinfo:
        colormap(values, "rainbow")
    _one_line(excinfo, "rainbow", "jet")
    with pytest.raises(IntrospectError):
        colormap(np.zeros((2, 2, 2)))


def test_heatmap_overlay():
    image = np.full((40, 60, 3), 100, np.uint8)
    values = np.arange(12, dtype=float).reshape(3, 4)
    out = heatmap_overlay(image, values, alpha=0.5)
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(heatmap_overlay(image, values, alpha=0.0), image)
    full = heatmap_overlay(image, values, alpha=1.0, cmap="gray", resample="nearest")
    assert full[0, 0, 0] == 0 and full[-1, -1, 0] == 255
    expected = np.round(0.5 * 100 + 0.5 * np.array([0, 0, 128]))
    np.testing.assert_array_equal(heatmap_overlay(image, values, 0.5, "jet", resample="nearest")[0, 0],
                                  expected)


# --------------------------------------------------------------------------------------------------
# grid, colorbar, boxes
# --------------------------------------------------------------------------------------------------
def test_grid_sizes_without_labels():
    tiles = [np.zeros((8, 8, 3), np.uint8)] * 9
    assert grid(tiles, ncols=3, pad=1).shape == (28, 28, 3)
    assert grid(tiles[:5], ncols=3, pad=2).shape == (2 * 8 + 3 * 2, 3 * 8 + 4 * 2, 3)
    assert grid(tiles[:4]).shape == (2 * 8 + 3 * 2, 2 * 8 + 3 * 2, 3)  # default ncols = ceil(sqrt(n))


def test_grid_mixed_sizes_are_padded_and_centered():
    small = np.zeros((4, 6, 3), np.uint8)
    big = np.zeros((10, 8), np.uint8)  # grayscale is accepted
    out = grid([small, big], ncols=2, pad=0, bg=255)
    assert out.shape == (10, 16, 3)
    assert (out[3:7, 1:7] == 0).all() and (out[:3, :8] == 255).all()  # small tile centered in its cell
    assert (out[:, 8:] == 0).all()


def test_grid_labels_are_drawn():
    tiles = [np.full((20, 20, 3), 200, np.uint8)] * 2
    labels = ["conv5 ch 12\nact 3.14", "x"]
    out = grid(tiles, ncols=2, pad=2, labels=labels)
    w, h = text_size(labels[0])
    assert out.shape[0] == 20 + h + 2 + 2 * 2
    assert out.shape[1] >= 2 * max(20, w) + 3 * 2
    strip = out[2 + 20:, 2:2 + max(20, w)]
    assert (strip < 128).any()  # dark text on white background
    with pytest.raises(IntrospectError) as excinfo:
        grid(tiles, labels=["one"])
    _one_line(excinfo, "1 labels", "2 tiles")
    with pytest.raises(IntrospectError):
        grid([])


def test_colorbar_and_with_colorbar():
    bar = colorbar(100, "jet", 0.0, 2.5, "p(true)")
    assert bar.shape[0] == 100 and bar.dtype == np.uint8
    np.testing.assert_array_equal(bar[0, 0], [128, 0, 0])   # top = vmax color
    np.testing.assert_array_equal(bar[-1, 0], [0, 0, 128])  # bottom = vmin color
    assert (bar[:, 12:] < 128).any()  # tick text
    img = np.zeros((64, 48, 3), np.uint8)
    both = with_colorbar(img, "viridis", -1, 1, "activation")
    assert both.shape[0] == 64 and both.shape[1] > 48 + 4 + 12
    np.testing.assert_array_equal(both[:, :48], img)


def test_draw_boxes():
    image = np.zeros((32, 32, 3), np.uint8)
    out = draw_boxes(image, [(4, 6, 20, 26)], color=(0, 255, 0), width=1)
    assert (image == 0).all()  # input untouched
    assert (out[4, 6:26] == (0, 255, 0)).all() and (out[19, 6:26] == (0, 255, 0)).all()
    assert (out[4:20, 25] == (0, 255, 0)).all() and (out[4:20, 26] == 0).all()  # end-exclusive
    assert (out[8:16, 10:20] == 0).all()
    labeled = draw_boxes(image, [(2.4, 2.6, 30, 30)], ["rf"], color=(255, 0, 0))
    assert (labeled[3:8, 4:10] != 0).any()
    with pytest.raises(IntrospectError):
        draw_boxes(image, [(0, 0, 4, 4)], ["a", "b"])
