"""ZFNet: the network of Zeiler & Fergus, Fig. 3, exactly.

224x224x3 input; conv1 96 filters 7x7 stride 2 -> 110x110; ReLU; 3x3 max pool stride 2 -> 55x55;
contrast normalization across feature maps; conv2 256 5x5 stride 2 -> 26x26; ReLU; pool -> 13x13;
normalization; conv3 384 3x3; conv4 384 3x3; conv5 256 3x3 (13x13); pool -> 6x6x256; fc6 4096;
fc7 4096 (dropout 0.5 before each); C-way output (softmax in the loss).

The paper's sizes need conv1 padding 1 ((224 + 2 - 7) // 2 + 1 = 110) and pools that round up
(ceil mode: 110 -> 55, 26 -> 13, 13 -> 6), as in the Caffe definitions of the time.
Widths, the fully connected size, the input size and the presence of each layer are arguments, for
the paper's ablations (Table 3) and for smaller data; the defaults are the paper's network.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

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


def _lrn() -> nn.LocalResponseNorm:
    return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)


class ZFNet(nn.Module):
    """The ZFNet of Fig. 3 (see the module docstring for every size).

    Args:
        num_classes (int): C, the size of the output layer (default 1000).
        in_channels (int): input channels (3 for colour, 1 for grey images).
        widths (sequence of 5 ints): filters of conv1..conv5 (default ``(96, 256, 384, 384, 256)``).
        fc (int): units of fc6 and fc7 (default 4096).
        dropout (float): dropout before fc6 and fc7 (default 0.5).
        lrn (bool): contrast normalization after pool1 and pool2 (default True).
        conv1_kernel, conv1_stride (int): 7 and 2 in the paper (AlexNet used 11 and 4).
        pool5_size (int): the spatial size of pool5's output that fc6 expects (6 at 224x224).
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
    ) -> None:
        super().__init__()
        w1, w2, w3, w4, w5 = widths
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w1, kernel_size=conv1_kernel, stride=conv1_stride, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            _lrn() if lrn else nn.Identity(),
            nn.Conv2d(w1, w2, kernel_size=5, stride=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            _lrn() if lrn else nn.Identity(),
            nn.Conv2d(w2, w3, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(w3, w4, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(w4, w5, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(w5 * pool5_size * pool5_size, fc),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(fc, fc),
            nn.ReLU(inplace=True),
            nn.Linear(fc, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def zfnet(**kwargs) -> ZFNet:
    """Build the paper's ZFNet; keyword arguments as :class:`ZFNet`."""
    return ZFNet(**kwargs)
