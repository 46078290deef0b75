"""Pretrained torchvision weights by name: files from a seeded TORCH_HOME (never the network), class
names, the weights' own preprocessing, `introspect models`, checkpoints and the bad-input lines."""
from __future__ import annotations

import json
import socket
import threading
import time

import numpy as np
import pytest
import torch
import torchvision
from click.testing import CliRunner
from PIL import Image

from introspect.cli import build_cli
from introspect.errors import IntrospectError
from introspect.models import load_model, meta_of, save_checkpoint
from introspect.models import weights as wmod

ARCH = "squeezenet1_1"  # the smallest torchvision file (5 MB)


def seed_weights(arch: str, name: str = "DEFAULT", seed: int = 0) -> dict:
    """Write random weights of ``arch`` where torchvision caches ``name`` (under $TORCH_HOME)."""
    w = wmod.resolve_weights(arch, name)
    torch.manual_seed(seed)
    model = torchvision.models.get_model(wmod.torchvision_name(arch), num_classes=len(w.meta["categories"]))
    path = wmod.weights_file(w)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    torch.save(state, path)
    return state


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


@pytest.fixture
def seeded(torch_home):
    return seed_weights(ARCH)


@pytest.fixture
def image_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (180, 260, 3), dtype=np.uint8)).save(path)
    return path


def run(*args):
    result = CliRunner().invoke(build_cli(), [str(a) for a in args])
    return result


@pytest.mark.parametrize("name", ["DEFAULT", "IMAGENET1K_V1", "imagenet1k_v1", "SqueezeNet1_1_Weights.IMAGENET1K_V1"])
def test_every_spelling_loads_the_cached_file(seeded, name):
    model = load_model(arch=ARCH, weights=name)
    own = model.state_dict()
    assert own.keys() == seeded.keys() and all(torch.equal(own[k], seeded[k]) for k in own)
    meta = meta_of(model)
    w = torchvision.models.SqueezeNet1_1_Weights.IMAGENET1K_V1
    assert meta.classes == list(w.meta["categories"]) and meta.weights == "SqueezeNet1_1_Weights.IMAGENET1K_V1"
    assert meta.resize == 256 and meta.input_size == (3, 224, 224) and not model.training


def test_weights_enum_is_torchvisions_not_a_list():
    """Every weights member torchvision has resolves by its name and by its full enum name."""
    for arch in torchvision.models.list_models(module=torchvision.models):
        ours = "alexnet_torchvision" if arch == "alexnet" else arch
        enum = torchvision.models.get_model_weights(arch)
        assert wmod.resolve_weights(ours, "DEFAULT") is enum.DEFAULT
        for w in enum:
            assert wmod.resolve_weights(ours, w.name) is w
            assert wmod.resolve_weights(ours, f"{enum.__name__}.{w.name}") is w


def test_preprocessing_equals_weights_transforms_for_every_weights():
    """The introspect preprocessing built from each weights' metadata is weights.transforms(), on a
    non-square photo, for every classification weights torchvision has (bilinear and bicubic)."""
    from introspect.images import Preprocess

    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (301, 437, 3), dtype=np.uint8))
    seen = set()
    for arch in torchvision.models.list_models(module=torchvision.models):
        for w in torchvision.models.get_model_weights(arch):
            pre = Preprocess.from_meta(wmod.preprocessing(w))
            key = (pre.input_size, pre.resize, pre.interpolation, pre.mean, pre.std)
            if key in seen:
                continue
            seen.add(key)
            expected = w.transforms()(img)
            assert torch.allclose(pre(img), expected, atol=1e-6, rtol=0), (arch, w)
    assert {k[2] for k in seen} >= {"bilinear", "bicubic"}


def test_cli_uses_the_weights_preprocessing_and_class_names(seeded, image_file, tmp_path):
    out = tmp_path / "occ"
    r = run("occlusion", image_file, "--arch", ARCH, "--weights", "DEFAULT", "--target", "TABBY",
            "--size", "60", "--stride", "60", "--device", "cpu", "--out", out)
    assert r.exit_code == 0, r.output
    w = torchvision.models.SqueezeNet1_1_Weights.DEFAULT
    expected = w.transforms()(Image.open(image_file).convert("RGB"))[None]
    x = np.load(out / "input.npy")
    assert x.shape == tuple(expected.shape) and np.allclose(x, expected.numpy(), atol=1e-6)
    doc = json.loads((out / "result.json").read_text())
    assert doc["targets"][0]["index"] == 281 and doc["targets"][0]["name"] == "tabby"
    assert "p(tabby)" in r.output
    categories = w.meta["categories"]
    assert doc["clean_label"]["name"] == categories[doc["clean_label"]["index"]]
    labels = np.load(out / "label.npy")
    assert {(e["index"], e["name"]) for e in doc["labels"]} == {(int(i), categories[int(i)]) for i in np.unique(labels)}


def test_deconv_with_weights_takes_images_as_arguments(seeded, image_file, tmp_path):
    out = tmp_path / "dc"
    r = run("deconv", image_file, "--arch", ARCH, "--weights", "DEFAULT", "--top-maps", "1", "--device", "cpu",
            "--out", out)
    assert r.exit_code == 0, r.output
    w = torchvision.models.SqueezeNet1_1_Weights.DEFAULT
    expected = w.transforms()(Image.open(image_file).convert("RGB"))[None]
    assert np.allclose(np.load(out / "input.npy"), expected.numpy(), atol=1e-6)


def test_checkpoint_of_a_pretrained_model_reproduces_it(seeded, tmp_path, image_file):
    model = load_model(arch=ARCH, weights="DEFAULT")
    path = save_checkpoint(tmp_path / "sq.pt", model)
    again = load_model(path)
    a, b = meta_of(model), meta_of(again)
    assert (b.arch, b.classes, b.input_size, b.resize, b.interpolation, b.mean, b.std, b.weights) == \
        (a.arch, a.classes, a.input_size, a.resize, a.interpolation, a.mean, a.std, a.weights)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_models_lists_weights_from_torchvisions_metadata():
    r = run("models", "--json")
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.output)}
    for arch in torchvision.models.list_models(module=torchvision.models):
        ours = "alexnet_torchvision" if arch == "alexnet" else arch
        listed = {w["name"]: w for w in rows[ours]["weights"]}
        enum = torchvision.models.get_model_weights(arch)
        assert set(listed) == {w.name for w in enum}
        for w in enum:
            acc = w.meta["_metrics"]["ImageNet-1K"]["acc@1"]
            assert listed[w.name]["acc@1"] == (None if acc != acc else acc)  # NaN (not measured): null
            assert listed[w.name]["num_params"] == w.meta["num_params"]
            assert listed[w.name]["default"] == (w is enum.DEFAULT)
    assert rows["zfnet"]["weights"] == [] and rows["alexnet"]["weights"] == []
    text = run("models").output
    assert "IMAGENET1K_V2" in text and "80.86%" in text


# ------------------------------------------------------------------------------------------------
# bad input: one line each
# ------------------------------------------------------------------------------------------------
def test_unknown_weights_lists_the_architectures_weights(torch_home):
    with pytest.raises(
        IntrospectError, match=r"unknown weights 'IMAGENET1K_V3' for resnet50.*IMAGENET1K_V1, IMAGENET1K_V2"
    ):
        load_model(arch="resnet50", weights="IMAGENET1K_V3")
    with pytest.raises(IntrospectError, match="VGG16_Weights.DEFAULT.*not resnet50's"):
        load_model(arch="resnet50", weights="VGG16_Weights.DEFAULT")
    with pytest.raises(IntrospectError, match="alexnet_torchvision"):
        load_model(arch="alexnet", weights="DEFAULT")
    r = run("layers", "--arch", "resnet50", "--weights", "V9")
    assert r.exit_code == 1 and r.output.count("\n") <= 2 and "IMAGENET1K_V2" in r.output


def test_weights_and_a_model_file_conflict(seeded, image_file, tiny_checkpoint, tmp_path):
    r = run("deconv", tiny_checkpoint, image_file, "--arch", ARCH, "--weights", "DEFAULT", "--out", tmp_path / "o")
    assert r.exit_code == 1 and "conflict" in r.output and "Traceback" not in r.output
    with pytest.raises(IntrospectError, match="conflict"):
        load_model(tiny_checkpoint, ARCH, weights="DEFAULT")
    with pytest.raises(IntrospectError, match="needs --arch"):
        load_model(weights="DEFAULT")


def test_corrupt_or_misfitting_cached_file_names_it(torch_home):
    w = wmod.resolve_weights(ARCH, "DEFAULT")
    path = wmod.weights_file(w)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(IntrospectError, match=f"{path.name}.*corrupt.*delete it"):
        load_model(arch=ARCH, weights="DEFAULT")
    torch.save(torchvision.models.squeezenet1_0().state_dict(), path)  # another architecture's weights
    with pytest.raises(IntrospectError, match=f"{path.name} does not fit squeezenet1_1.*delete it"):
        load_model(arch=ARCH, weights="DEFAULT")


def test_offline_download_fails_within_seconds_with_the_place_to_put_the_file(torch_home, monkeypatch):
    """A server that accepts the connection and never answers: the download gives up after the short
    timeout and says which file to fetch from where, and where to put it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    stop = threading.Event()

    def hold():
        conns = []
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(server.accept()[0])
            except OSError:
                pass
        for c in conns:
            c.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    w = wmod.resolve_weights(ARCH, "DEFAULT")
    url = f"http://127.0.0.1:{port}/{wmod.weights_file(w).name}"
    monkeypatch.setattr(wmod, "_url", lambda weights: url)
    monkeypatch.setattr(wmod, "DOWNLOAD_TIMEOUT", 1.0)
    start = time.monotonic()
    try:
        with pytest.raises(IntrospectError) as info:
            load_model(arch=ARCH, weights="DEFAULT")
    finally:
        stop.set()
        thread.join()
        server.close()
    took = time.monotonic() - start
    message = str(info.value)
    assert took < 5, took
    assert wmod.weights_file(w).name in message and str(wmod.weights_file(w).parent) in message and url in message
    assert "\n" not in message and not wmod.weights_file(w).exists()


def test_refused_connection_is_one_cli_line(torch_home, monkeypatch, image_file, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: the connection is refused
    monkeypatch.setattr(wmod, "_url", lambda weights: f"http://127.0.0.1:{port}/squeezenet1_1-b8a52dc0.pth")
    r = run("deconv", image_file, "--arch", ARCH, "--weights", "DEFAULT", "--out", tmp_path / "o")
    assert r.exit_code == 1 and "squeezenet1_1-b8a52dc0.pth" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------------
# auxiliary heads and builder arguments
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch, size", [("googlenet", 64), ("inception_v3", 75)])
def test_state_dicts_with_auxiliary_heads_load(tmp_path, arch, size):
    """torchvision's defaults when training (aux_logits=True) leave aux keys in the state dict; the
    model is built with them, and in eval mode its output is the torchvision model's."""
    from zoo import fast_init

    torch.manual_seed(0)
    # fast_init: the truncated-normal initialisation of Inception v3, twice, was most of the time;
    # the weights only need to be random and the same in both models (the file carries them)
    with fast_init():
        reference = torchvision.models.get_model(arch, aux_logits=True, init_weights=True, num_classes=5).eval()
        path = tmp_path / f"{arch}.pth"
        torch.save(reference.state_dict(), path)
        model = load_model(path, arch)
    assert meta_of(model).arch_kwargs["aux_logits"] is True and meta_of(model).arch_kwargs["num_classes"] == 5
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    from introspect.core.layers import last_conv_layer

    assert "aux" not in last_conv_layer(model, x).lower()  # the aux heads never run in eval mode


def test_arch_arg_reaches_the_builder(tmp_path):
    r = run("layers", "--arch", "googlenet", "--arch-arg", "aux_logits=true", "--arch-arg", "num_classes=7",
            "--json")
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.output[r.output.index("["):])}
    assert "aux1.fc2" in rows and rows["fc"]["output_shape"][-1] == 7
    bad = run("layers", "--arch", "googlenet", "--arch-arg", "aux_logits")
    assert bad.exit_code == 2 and "KEY=VALUE" in bad.output
