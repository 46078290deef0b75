"""ZFNet: the network of Zeiler & Fergus, Fig. 3, exactly.

224x224x3 input; conv1 96 filters 7x7 stride 2 -> 110x110; ReLU; 3x3 max pool stride 2 -> 55x55;
contrast normalization across feature maps; conv2 256 5x5 stride 2 -> 26x26; ReLU; pool -> 13x13;
normalization; conv3 384 3x3; conv4 384 3x3; conv5 256 3x3 (13x13); pool -> 6x6x256; fc6 4096;
fc7 4096 (dropout 0.5 before each); C-way output (softmax in the loss).

The paper's sizes need conv1 padding 1 ((224 + 2 - 7) // 2 + 1 = 110) and pools that round up
(ceil mode: 110 -> 55, 26 -> 13, 13 -> 6), as in the Caffe definitions of the time.

Widths, the fully connected size, the strides and paddings of conv1 and conv2, the presence of the
normalization and of each of conv3, conv4, conv5, fc6 and fc7 are arguments, for the paper's
ablations (Table 3) and for smaller data; the defaults are the paper's network. Removing a layer
never renames the others: module names (and so state-dict keys and the aliases ``conv5``, ``fc6``...)
are those of the full network, with the removed layers' names simply absent.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from introspect.errors import IntrospectError

#: The paper's layer names -> module names, for ``--layer conv5`` and friends.
ZFNET_ALIASES = {
    "conv1": "features.0", "relu1": "features.1", "pool1": "features.2", "norm1": "features.3",
    "conv2": "features.4", "relu2": "features.5", "pool2": "features.6", "norm2": "features.7",
    "conv3": "features.8", "relu3": "features.9",
    "conv4": "features.10", "relu4": "features.11",
    "conv5": "features.12", "relu5": "features.13", "pool5": "features.14",
    "fc6": "classifier.1", "relu6": "classifier.2",
    "fc7": "classifier.4", "relu7": "classifier.5",
    "fc8": "classifier.6",
}

#: Layers that ``drop_layers`` may remove (Table 3 of the paper removes conv3, conv4, fc6, fc7).
DROPPABLE = ("conv3", "conv4", "conv5", "fc6", "fc7")


def _lrn() -> nn.LocalResponseNorm:
    return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)


def _check_args(widths, fc, drop) -> tuple[tuple[int, ...], frozenset]:
    widths = tuple(int(w) for w in widths)
    if len(widths) != 5 or any(w <= 0 for w in widths):
        raise IntrospectError(f"ZFNet needs 5 positive widths (conv1..conv5), got {widths}; e.g. 96,256,384,384,256")
    if int(fc) <= 0:
        raise IntrospectError(f"ZFNet's fc size must be positive, got {fc}; e.g. 4096")
    drop = frozenset(str(d) for d in drop)
    unknown = sorted(drop - set(DROPPABLE))
    if unknown:
        raise IntrospectError(
            f"cannot remove layer(s) {', '.join(unknown)} of ZFNet; removable layers are {', '.join(DROPPABLE)}"
        )
    return widths, drop


class ZFNet(nn.Module):
    """The ZFNet of Fig. 3 (see the module docstring for every size).

    Args:
        num_classes (int): C, the size of the output layer (default 1000).
        in_channels (int): input channels (3 for colour, 1 for grey images).
        widths (sequence of 5 ints): filters of conv1..conv5 (default ``(96, 256, 384, 384, 256)``).
        fc (int): units of fc6 and fc7 (default 4096).
        dropout (float): dropout before fc6 and fc7 (default 0.5).
        lrn (bool): contrast normalization after pool1 and pool2 (default True; when False the
            ``norm1``/``norm2`` modules are ``nn.Identity``).
        conv1_kernel, conv1_stride, conv1_padding (int): 7, 2 and 1 in the paper (AlexNet used 11x11
            stride 4).
        conv2_stride, conv2_padding (int): 2 and 0 in the paper (stride 1, padding 2 keeps the size of
            small inputs).
        pool5_size (int): the spatial size of pool5's output that fc6 expects (6 at 224x224; see
            :func:`pool5_size_for`).
        drop_layers (sequence of str): layers to remove, any of ``conv3``, ``conv4``, ``conv5``,
            ``fc6``, ``fc7`` (with its ReLU and, for fc6/fc7, its dropout); the next layer takes the
            previous one's output. Default: none.

    Attributes:
        layer_aliases (dict[str, str]): alias -> module name, for the layers this instance has.

    Example:
        >>> net = ZFNet(num_classes=10)
        >>> net.features(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 256, 6, 6])
        >>> ZFNet(num_classes=10, drop_layers=["conv3", "conv4"]).layer_aliases["conv5"]
        'features.12'
    """

    layer_aliases = ZFNET_ALIASES

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        widths: Sequence[int] = (96, 256, 384, 384, 256),
        fc: int = 4096,
        dropout: float = 0.5,
        lrn: bool = True,
        conv1_kernel: int = 7,
        conv1_stride: int = 2,
        pool5_size: int = 6,
        conv1_padding: int = 1,
        conv2_stride: int = 2,
        conv2_padding: int = 0,
        drop_layers: Sequence[str] = (),
    ) -> None:
        super().__init__()
        (w1, w2, w3, w4, w5), drop = _check_args(widths, fc, drop_layers)
        features: list[tuple[str, nn.Module]] = [
            ("0", nn.Conv2d(in_channels, w1, kernel_size=conv1_kernel, stride=conv1_stride, padding=conv1_padding)),
            ("1", nn.ReLU(inplace=True)),
            ("2", nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)),
            ("3", _lrn() if lrn else nn.Identity()),
            ("4", nn.Conv2d(w1, w2, kernel_size=5, stride=conv2_stride, padding=conv2_padding)),
            ("5", nn.ReLU(inplace=True)),
            ("6", nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)),
            ("7", _lrn() if lrn else nn.Identity()),
        ]
        channels = w2
        for index, (name, width) in enumerate((("conv3", w3), ("conv4", w4), ("conv5", w5))):
            if name in drop:
                continue
            features += [(str(8 + 2 * index), nn.Conv2d(channels, width, kernel_size=3, padding=1)),
                         (str(9 + 2 * index), nn.ReLU(inplace=True))]
            channels = width
        features.append(("14", nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)))
        self.features = nn.Sequential(OrderedDict(features))

        units = channels * pool5_size * pool5_size
        classifier: list[tuple[str, nn.Module]] = []
        for first, name in ((0, "fc6"), (3, "fc7")):
            if name in drop:
                continue
            classifier += [(str(first), nn.Dropout(p=dropout)), (str(first + 1), nn.Linear(units, fc)),
                           (str(first + 2), nn.ReLU(inplace=True))]
            units = fc
        classifier.append(("6", nn.Linear(units, num_classes)))
        self.classifier = nn.Sequential(OrderedDict(classifier))

        names = {name for name, _ in self.named_modules()}
        self.layer_aliases = {alias: name for alias, name in ZFNET_ALIASES.items() if name in names}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def zfnet(**kwargs) -> ZFNet:
    """Build the paper's ZFNet; keyword arguments as :class:`ZFNet`.

    Example:
        >>> model = zfnet(num_classes=10, widths=(32, 64, 128, 128, 64), fc=256, pool5_size=4,
        ...               conv1_padding=3, conv2_stride=1, conv2_padding=2)
    """
    return ZFNet(**kwargs)


def pool5_size_for(input_hw: int | tuple[int, int], **kwargs) -> int:
    """The spatial size of pool5's output for a square input of ``input_hw`` pixels.

    Args:
        input_hw (int | tuple[int, int]): input height (and width; they must be equal).
        **kwargs: the :class:`ZFNet` arguments that shape the feature layers (``conv1_kernel``,
            ``conv1_stride``, ``conv1_padding``, ``conv2_stride``, ``conv2_padding``; others ignored).

    Returns:
        int: what to pass as ``pool5_size`` (6 for the paper's network at 224).

    Raises:
        IntrospectError: the input is not square or too small for the layers.

    Example:
        >>> pool5_size_for(224)
        6
        >>> pool5_size_for(64, conv1_padding=3, conv2_stride=1, conv2_padding=2)
        4
    """
    h, w = (input_hw, input_hw) if isinstance(input_hw, int) else tuple(input_hw)
    if h != w:
        raise IntrospectError(f"ZFNet needs a square input, got {h}x{w}; pass a square --input-size")

    def conv(n, k, s, p):
        return (n + 2 * p - k) // s + 1

    def pool(n):  # 3x3 stride 2, ceil mode, no padding (the last window starts inside the input)
        out = -(-(n - 3) // 2) + 1
        return out - 1 if (out - 1) * 2 >= n else out

    n = conv(h, kwargs.get("conv1_kernel", 7), kwargs.get("conv1_stride", 2), kwargs.get("conv1_padding", 1))
    sizes = [n]
    n = pool(n) if n >= 3 else 0
    sizes.append(n)
    n = conv(n, 5, kwargs.get("conv2_stride", 2), kwargs.get("conv2_padding", 0)) if n > 0 else 0
    sizes.append(n)
    n = pool(n) if n >= 3 else 0
    sizes.append(n)
    n = pool(n) if n >= 3 else 0
    if n <= 0:
        raise IntrospectError(
            f"a {h}x{w} input is too small for this ZFNet (feature maps {sizes}); use a larger --input-size "
            "or smaller strides (conv2_stride=1, conv2_padding=2)"
        )
    return n
