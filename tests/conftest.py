"""Shared fixtures: small real models built here (no downloads), seeded."""
from __future__ import annotations

import os

import pytest
import torch
import torchvision

torch.set_num_threads(min(2, os.cpu_count() or 1))


def build(name: str) -> torch.nn.Module:
    """A model with fixed random weights in eval mode: zfnet, alexnet (paper's), alexnet_tv, vgg11, resnet18."""
    from introspect.models import alexnet, zfnet

    torch.manual_seed(0)
    model = {
        "zfnet": lambda: zfnet(num_classes=10),
        "zfnet_nolrn": lambda: zfnet(num_classes=10, lrn=False),
        "alexnet": lambda: alexnet(num_classes=10),
        "alexnet_tv": lambda: torchvision.models.alexnet(num_classes=10),
        "vgg11": lambda: torchvision.models.vgg11(num_classes=10),
        "resnet18": lambda: torchvision.models.resnet18(num_classes=10),
    }[name]()
    return model.eval()


@pytest.fixture
def make_model():
    return build


@pytest.fixture(autouse=True)
def _no_third_party_leak(monkeypatch):
    """Tests see a fresh plugin manager when they change the environment."""
    yield
