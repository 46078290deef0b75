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
def one_thread():
    """One intra-op thread for the test: on a shared CPU, thread barriers cost more than small
    models gain (and child processes of the distributed tests use one thread too)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_model():
    return build


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A small ZFNet-shaped introspect checkpoint (64x64 RGB input, 3 named classes)."""
    from introspect.models import save_checkpoint, zfnet

    torch.manual_seed(0)
    kwargs = {"num_classes": 3, "widths": [8, 16, 16, 16, 8], "fc": 16, "pool5_size": 1}
    model = zfnet(**kwargs).eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, model, arch="zfnet", arch_kwargs=kwargs, classes=["cat", "dog", "bird"],
                    input_size=(3, 64, 64), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return path


@pytest.fixture(scope="session")
def photo(tmp_path_factory):
    """A real photograph (scikit-image's chelsea) as a PNG file."""
    import skimage.data
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "chelsea.png"
    Image.fromarray(skimage.data.chelsea()).save(path)
    return path
