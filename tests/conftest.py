"""Shared fixtures and helpers: small real models built here (no downloads), seeded, and the command line
run in-process.

- :func:`small_zfnet` builds a seeded, small ZFNet (``small_zfnet(num_classes=4, lrn=False)``); tests
  import it (``from conftest import small_zfnet``).
- :func:`invoke` runs ``introspect ARGS...`` in-process and returns click's ``Result``; the ``cli``
  fixture is the same function.
"""
from __future__ import annotations

import copy
import os

import pytest
import torch
import torchvision

torch.set_num_threads(min(2, os.cpu_count() or 1))


#: Each model of :func:`build` as first built, and the random-number state its building left.
_BUILT: dict[str, tuple[torch.nn.Module, torch.Tensor]] = {}


def build(name: str) -> torch.nn.Module:
    """A model with fixed random weights in eval mode: zfnet, zfnet_nolrn, alexnet (paper's), alexnet_tv,
    vgg11, resnet18 (10 classes each). Each name is built once (seeded) and every call returns a deep
    copy of it, leaving torch's random-number state as building it would (VGG-11's random initialisation
    alone is 2 s)."""
    from introspect.models import alexnet, zfnet

    if name not in _BUILT:
        torch.manual_seed(0)
        model = {
            "zfnet": lambda: zfnet(num_classes=10),
            "zfnet_nolrn": lambda: zfnet(num_classes=10, lrn=False),
            "alexnet": lambda: alexnet(num_classes=10),
            "alexnet_tv": lambda: torchvision.models.alexnet(num_classes=10),
            "vgg11": lambda: torchvision.models.vgg11(num_classes=10),
            "resnet18": lambda: torchvision.models.resnet18(num_classes=10),
        }[name]()
        _BUILT[name] = (model.eval(), torch.get_rng_state())
    model, state = _BUILT[name]
    torch.set_rng_state(state)
    return copy.deepcopy(model)


#: The builder arguments of :func:`small_zfnet`: 64 x 64 inputs, conv5 8 x 3 x 3, fc7 16 units.
SMALL_ZFNET = {"num_classes": 3, "widths": (8, 16, 16, 16, 8), "fc": 16, "pool5_size": 1}


def small_zfnet(*, seed: int = 0, dtype: torch.dtype | None = None, device: str | torch.device | None = None,
                **overrides) -> torch.nn.Module:
    """A ZFNet small enough for any test, with weights seeded by ``seed``, in eval mode: every call with
    the same arguments builds the same network. ``overrides`` change builder arguments
    (:data:`SMALL_ZFNET`); the arguments used are in ``model.build_kwargs``."""
    from introspect.models import zfnet

    kwargs = {**SMALL_ZFNET, **overrides}
    torch.manual_seed(seed)
    model = zfnet(**kwargs).eval()
    if dtype is not None:
        model = model.to(dtype)
    if device is not None:
        model = model.to(device)
    model.build_kwargs = kwargs
    return model


def invoke(*args, **kwargs):
    """``introspect ARGS...`` in-process (arguments turned into strings); click's ``Result``."""
    from click.testing import CliRunner

    from introspect.cli import build_cli

    return CliRunner().invoke(build_cli(), [str(a) for a in args], **kwargs)


@pytest.fixture(scope="session")
def cli():
    """The command line in-process: ``cli("deconv", model, image, "--out", out)`` (see :func:`invoke`)."""
    return invoke


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
    from introspect.models import save_checkpoint

    model = small_zfnet(widths=[8, 16, 16, 16, 8])
    kwargs = model.build_kwargs
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, model, arch="zfnet", arch_kwargs=kwargs, classes=["cat", "dog", "bird"],
                    input_size=(3, 64, 64), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return path


#: The report site of :func:`report_site`: the bundled model, these layers, top-k and image pages.
REPORT_SITE = {"layers": ["conv1", "conv5"], "k": 4, "images": 3}


@pytest.fixture(scope="session")
def report_site(tmp_path_factory):
    """One report site of the bundled model (:data:`REPORT_SITE`), built once for the session: the
    report tests check its files against independent computations, the browser tests browse it.
    Read-only: a test that writes a site builds its own."""
    import introspect

    model = introspect.load_model(None, device="cpu")
    out = tmp_path_factory.mktemp("report") / "site"
    layers, k, images = REPORT_SITE["layers"], REPORT_SITE["k"], REPORT_SITE["images"]
    return introspect.report(model, out=out, layers=layers, k=k, images=images, batch_size=4,
                             command=f"introspect report --layers {','.join(layers)} --k {k} --images {images}")


@pytest.fixture(scope="session")
def photo(tmp_path_factory):
    """A real photograph (scikit-image's chelsea) as a PNG file."""
    import skimage.data
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "chelsea.png"
    Image.fromarray(skimage.data.chelsea()).save(path)
    return path
