"""Conv/pool geometry in one place (introspect.core.ops), against PyTorch itself and brute force."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from introspect.core import receptive_field
from introspect.core.ops import conv_padding, pair, pool_stride


@pytest.mark.parametrize("kernel, dilation", [(4, 1), (3, 2), ((4, 3), (1, 1)), ((2, 5), (3, 1)), (1, 1)])
def test_same_padding_is_what_conv2d_does_also_when_the_total_is_odd(kernel, dilation):
    x = torch.randn(1, 2, 13, 11)
    weight = torch.randn(3, 2, *pair(kernel))
    (top, left), (bottom, right) = conv_padding("same", kernel, dilation)
    padded = F.conv2d(F.pad(x, (left, right, top, bottom)), weight, dilation=dilation)
    torch.testing.assert_close(padded, F.conv2d(x, weight, padding="same", dilation=dilation))


def test_valid_int_and_pair_padding_are_symmetric():
    assert conv_padding("valid", 5) == ((0, 0), (0, 0))
    assert conv_padding(2, 5) == ((2, 2), (2, 2))
    assert conv_padding((1, 3), 5) == ((1, 3), (1, 3))
    with pytest.raises(ValueError, match="unknown padding 'full'"):
        conv_padding("full", 3)


def test_pool_stride_defaults_to_the_kernel():
    assert pool_stride(None, 3) == (3, 3) and pool_stride((), (2, 4)) == (2, 4) and pool_stride(1, 3) == (1, 1)
    assert pair([]) == (1, 1) and pair([2, 5]) == (2, 5)


def test_receptive_field_of_an_odd_same_padding_conv_matches_the_gradient():
    net = nn.Sequential(nn.Conv2d(1, 1, 4, padding="same"), nn.MaxPool2d(2), nn.Conv2d(1, 1, 3, padding="same"))
    field = receptive_field(net, "2", (1, 24, 24))
    x = torch.randn(1, 1, 24, 24, requires_grad=True)
    out = net(x)
    y, xx = 5, 4
    out[0, 0, y, xx].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    cols = torch.nonzero(x.grad[0, 0].abs().sum(0)).flatten()
    # the gradient's support lies inside the field (a max pool passes one position of each window)
    top, left = field.lo[0] + y * field.jump[0], field.lo[1] + xx * field.jump[1]
    assert top <= int(rows.min()) and int(rows.max()) < top + field.size[0]
    assert left <= int(cols.min()) and int(cols.max()) < left + field.size[1]
    # and the field is exact for the same net with average pooling (every position counts)
    net[1] = nn.AvgPool2d(2)
    x.grad = None
    net(x)[0, 0, y, xx].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    cols = torch.nonzero(x.grad[0, 0].abs().sum(0)).flatten()
    assert (int(rows.min()), int(rows.max()) + 1) == (top, top + field.size[0])
    assert (int(cols.min()), int(cols.max()) + 1) == (left, left + field.size[1])
