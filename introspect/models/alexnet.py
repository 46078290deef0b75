"""AlexNet, the paper's baseline (Krizhevsky et al. 2012), and torchvision's layout.

``alexnet()`` is the single-column network the ZFNet paper compares against: conv1 96 11x11 stride 4,
ReLU, local response normalization, 3x3 max pool stride 2; conv2 256 5x5 pad 2, ReLU, LRN, pool;
conv3 384, conv4 384, conv5 256 (3x3 pad 1), pool; fc6 4096, fc7 4096 with dropout 0.5; C outputs.
With 224x224 inputs conv1 gives 55x55 (padding 2), as in torchvision.

``alexnet_torchvision()`` is torchvision's own ``AlexNet`` class (64/192/384/256/256 filters, no LRN),
so that torchvision AlexNet state dicts load as they are.
"""
from __future__ import annotations

import torch
from torch import nn

ALEXNET_ALIASES = {
    "conv1": "features.0", "relu1": "features.1", "norm1": "features.2", "pool1": "features.3",
    "conv2": "features.4", "relu2": "features.5", "norm2": "features.6", "pool2": "features.7",
    "conv3": "features.8", "relu3": "features.9",
    "conv4": "features.10", "relu4": "features.11",
    "conv5": "features.12", "relu5": "features.13", "pool5": "features.14",
    "fc6": "classifier.1", "relu6": "classifier.2",
    "fc7": "classifier.4", "relu7": "classifier.5",
    "fc8": "classifier.6",
}

TORCHVISION_ALEXNET_ALIASES = {
    "conv1": "features.0", "relu1": "features.1", "pool1": "features.2",
    "conv2": "features.3", "relu2": "features.4", "pool2": "features.5",
    "conv3": "features.6", "relu3": "features.7",
    "conv4": "features.8", "relu4": "features.9",
    "conv5": "features.10", "relu5": "features.11", "pool5": "features.12",
    "fc6": "classifier.1", "relu6": "classifier.2",
    "fc7": "classifier.4", "relu7": "classifier.5",
    "fc8": "classifier.6",
}


class AlexNet(nn.Module):
    """The paper's AlexNet baseline (see the module docstring).

    Args:
        num_classes (int): size of the output layer (default 1000).
        in_channels (int): input channels.
        dropout (float): dropout before fc6 and fc7 (default 0.5).
        lrn (bool): local response normalization after conv1 and conv2 (default True).
    """

    layer_aliases = ALEXNET_ALIASES

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5, lrn: bool = True):
        super().__init__()
        norm = (lambda: nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)) if lrn else nn.Identity
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 96, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            norm(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(96, 256, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            norm(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(256, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def alexnet(**kwargs) -> AlexNet:
    """Build the paper's AlexNet baseline; keyword arguments as :class:`AlexNet`."""
    return AlexNet(**kwargs)


def _torchvision_alexnet_class() -> type[nn.Module]:
    """``TorchvisionAlexNetWithAliases``, made on first use so that importing introspect does not import
    torchvision's model zoo."""
    cls = globals().get("TorchvisionAlexNetWithAliases")
    if cls is None:
        from torchvision.models import AlexNet as TorchvisionAlexNet

        cls = type("TorchvisionAlexNetWithAliases", (TorchvisionAlexNet,), {
            "__doc__": "torchvision's ``AlexNet`` with the paper's layer names as aliases; same state dict keys.",
            "__module__": __name__,
            "layer_aliases": TORCHVISION_ALEXNET_ALIASES,
        })
        globals()["TorchvisionAlexNetWithAliases"] = cls
    return cls


def __getattr__(name: str) -> type[nn.Module]:
    if name == "TorchvisionAlexNetWithAliases":  # pickles of whole modules name the class
        return _torchvision_alexnet_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def alexnet_torchvision(**kwargs) -> nn.Module:
    """torchvision's AlexNet layout (loads torchvision AlexNet state dicts)."""
    return _torchvision_alexnet_class()(**kwargs)
