"""The optional timm plugin: ``--arch timm/<model>`` for any timm model, seeded weights (never the
network), timm's preprocessing and class names with ``--weights``, and the plugin inactive (with its
reason) where timm is absent."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from introspect.errors import IntrospectError
from introspect.models import load_model, meta_of
from zoo import changes, convs_that_run, snapshot

SMALLEST = ["resnet18", "efficientnet_b0", "convnext_atto"]


@pytest.fixture
def seeded_file(tmp_path):
    def make(name):
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False, num_classes=10).eval()
        path = tmp_path / f"{name}.pt"
        torch.save(model.state_dict(), path)
        return model, path
    return make


@pytest.mark.parametrize("name", SMALLEST)
def test_methods_on_timm_models_leave_them_unchanged(name, seeded_file, one_thread):
    from introspect import correspondence, occlusion, project, top_k
    from introspect.core import resolve_layer
    from introspect.core.layers import last_conv_layer

    reference, path = seeded_file(name)
    model = load_model(path, f"timm/{name}")
    assert meta_of(model).arch == f"timm/{name}" and meta_of(model).arch_kwargs["num_classes"] == 10
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in reference.state_dict().items())
    side = 64
    torch.manual_seed(1)
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    default = last_conv_layer(model, x)
    assert default == convs_that_run(model, x[:1])[-1]
    model.train()
    before = snapshot(model)
    projection = project(model, x[:1], maps=1)
    assert resolve_layer(model, projection.name)[0] == default and torch.isfinite(projection.projections).all()
    top = top_k(model, x, k=1, channels=[0, 1], batch_size=2)
    assert top.activation.shape[:2] == (2, 1)
    for incremental in (True, False):
        occ = occlusion(model, x[:1], size=32, stride=32, incremental=incremental, project=incremental)
        assert occ.prob.shape == (1, 2, 2)
    correspondence(model, x, parts={"part": [16, 16, 32, 32]}, layers=[default], random_trials=1)
    assert changes(before, model) == []


def test_unknown_timm_name_gives_the_closest():
    with pytest.raises(IntrospectError, match=r"unknown timm model 'resnet181' \(did you mean 'resnet18'"):
        load_model(None, "timm/resnet181")
    with pytest.raises(IntrospectError, match="pretrained tags: a1_in1k"):
        load_model(arch="timm/resnet18", weights="imagenet_v9")


def test_inactive_without_timm(monkeypatch):
    import importlib.util

    import introspect_timm
    from introspect.manager import IntrospectPluginManager

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "timm" else real(name, *a))
    pm = IntrospectPluginManager()
    pm.load_entry_points()
    info = pm.infos["timm"]
    assert info.error is None and "timm is not installed" in info.inactive and "introspect[timm]" in info.inactive
    with pytest.raises(IntrospectError, match="timm is not installed"):
        introspect_timm.find_architecture("timm/resnet18")
    assert introspect_timm.find_architecture("resnet18") is None  # not its family: the next plugin's


def test_core_never_imports_timm():
    code = ("import sys, introspect\n"
            "m = introspect.load_model(arch='squeezenet1_1'); introspect.methods(); introspect.architectures()\n"
            "from introspect.cli import build_cli; build_cli()\n"
            "assert 'timm' not in sys.modules, 'timm imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def seed_hf_cache(root, repo: str, state: dict) -> None:
    """Put ``state`` where huggingface_hub caches ``repo``'s model.safetensors (revision main)."""
    from safetensors.torch import save_file

    folder = root / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snap = folder / "snapshots" / commit
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snap / "model.safetensors"))


def test_weights_from_the_hf_cache_bring_timms_preprocessing_and_class_names(tmp_path):
    torch.manual_seed(0)
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    seed_hf_cache(tmp_path / "hub", "timm/resnet18.a1_in1k", state)
    rng = np.random.default_rng(0)
    image = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (150, 210, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path / "hub"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "introspect.cli", "occlusion", str(image), "--arch", "timm/resnet18",
                           "--weights", "DEFAULT", "--target", "tench", "--size", "112", "--stride", "112",
                           "--device", "cpu", "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads((out / "result.json").read_text())
    assert doc["targets"][0]["index"] == 0 and doc["targets"][0]["name"].startswith("tench")
    model = timm.create_model("resnet18", pretrained=False)
    config = timm.data.resolve_data_config({}, model=model)
    expected = timm.data.create_transform(**config)(Image.open(image).convert("RGB"))[None]
    assert np.allclose(np.load(out / "input.npy"), expected.numpy(), atol=1e-6)
