"""The `introspect deconv` and `introspect top` commands."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from conftest import invoke
from introspect.cli import build_cli
from introspect.images import Preprocess, preprocess_image
from introspect.models import load_model, save_checkpoint, zfnet
from introspect.output import MANIFEST

KWARGS = {"num_classes": 5, "widths": [16, 24, 32, 32, 12], "fc": 32, "pool5_size": 2}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("deconv_cli")
    torch.manual_seed(0)
    model = zfnet(**KWARGS)
    ckpt = save_checkpoint(root / "zf.pt", model, arch="zfnet", arch_kwargs=KWARGS, input_size=(3, 96, 96),
                           classes=[f"c{i}" for i in range(5)])
    rng = np.random.default_rng(1)
    images = []
    for i in range(2):
        path = root / f"photo{i}.png"
        Image.fromarray(rng.integers(0, 255, (120, 100, 3), dtype=np.uint8)).save(path)
        images.append(path)
    data = root / "data"
    for i in range(7):
        sub = data / ("a" if i < 4 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(sub / f"{i}.jpg")
    return {"root": root, "model": ckpt, "images": images, "data": data}


def run(args):
    return invoke(*args, catch_exceptions=False)


def test_deconv_writes_grid_arrays_json_and_input(files, tmp_path):
    out = tmp_path / "d"
    result = run(["deconv", files["model"], files["images"][0], "--out", out, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if p.name != MANIFEST) == [
        "conv5.npy",
        "conv5.png",
        "input.npy",
        "result.json",
    ]
    projections = np.load(out / "conv5.npy")
    assert projections.dtype == np.float32 and projections.shape == (9, 3, 96, 96)
    model = load_model(files["model"])
    x = preprocess_image(files["images"][0], Preprocess.from_meta(model.introspect_meta))
    np.testing.assert_array_equal(np.load(out / "input.npy"), x.numpy())
    doc = json.loads((out / "result.json").read_text())
    layer = doc["layers"][0]
    assert layer["name"] == "conv5" and layer["layer"] == "features.12" and doc["mode"] == "max"
    rows = layer["projections"]
    assert len(rows) == 9 and rows[0]["image_name"].endswith("photo0.png")
    assert all(a["activation"] >= b["activation"] for a, b in zip(rows, rows[1:]))
    assert set(rows[0]) >= {"channel", "position", "activation", "box"}
    picture = Image.open(out / "conv5.png")
    assert picture.size[0] > 300 and picture.size[1] > 300


def test_deconv_options(files, tmp_path):
    out = tmp_path / "d"
    result = run(["deconv", files["model"], *files["images"], "--layer", "conv5", "--layer", "conv3",
                  "--layer", "features.12", "--channel", "3", "--channel", "5", "--mode", "map",
                  "--out", out, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [layer["name"] for layer in doc["layers"]] == ["conv5", "conv3"]
    assert np.load(out / "conv3.npy").shape == (4, 3, 96, 96)
    rows = doc["layers"][0]["projections"]
    assert [(r["image"], r["channel"]) for r in rows] == [(0, 3), (0, 5), (1, 3), (1, 5)]
    assert doc["layers"][0]["mode"] == "map"
    result = run(["deconv", files["model"], files["images"][1], "--top-maps", "2", "--out", out])
    assert result.exit_code == 0 and np.load(out / "conv5.npy").shape == (2, 3, 96, 96)


def test_deconv_without_model_and_image_uses_the_bundled_ones(files, tmp_path):
    from introspect.cli import bundled_image
    from introspect.models.load import bundled_checkpoint

    out = tmp_path / "d"
    result = run(["deconv", "--out", out, "--top-maps", "3", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert bundled_checkpoint().name in result.stderr and bundled_image().name in result.stderr
    doc = json.loads((out / "result.json").read_text())
    assert doc["images"][0].endswith(bundled_image().name) and len(doc["layers"][0]["projections"]) == 3
    model = load_model(None)
    assert np.load(out / "conv5.npy").shape == (3, *model.introspect_meta.input_size)
    # with --arch and no model file, the first argument may be the image
    result = run(["deconv", "--arch", "vgg11", files["images"][0], "--layer", "features.3", "--top-maps", "1",
                  "--out", tmp_path / "v"])
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "v" / "features.3.npy").shape == (1, 3, 224, 224)


def test_deconv_errors_are_one_line_and_write_nothing(files, tmp_path):
    out = tmp_path / "d"
    for args, message in (
        (["--channel", "12"], "0..11"),
        (["--layer", "conv9"], "unknown layer"),
        (["--mode", "mean"], "mean"),
    ):
        result = run(["deconv", files["model"], files["images"][0], "--out", out, *args])
        assert result.exit_code != 0
        assert message in result.output and "Traceback" not in result.output
        assert not out.exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run(["deconv", files["model"], files["images"][0], "--out", blocker / "sub"])
    assert result.exit_code == 1 and "cannot write" in result.output


def test_top_writes_figures_arrays_and_json(files, tmp_path):
    out = tmp_path / "t"
    result = run(["top", files["model"], files["data"], "--layer", "conv5", "--k", "3", "--channels", "0-2,7",
                  "--batch-size", "3", "--out", out])
    assert result.exit_code == 0, result.output
    assert "mining conv5" in result.stderr
    doc = json.loads((out / "top.json").read_text())
    assert doc["k"] == 3 and doc["images_seen"] == 7 and [m["channel"] for m in doc["maps"]] == [0, 1, 2, 7]
    assert np.load(out / "top.npy").shape == (4, 3, 3, 96, 96)
    assert np.load(out / "input.npy").shape == (4, 3, 3, 96, 96)
    assert sorted(p.name for p in (out / "channels").iterdir()) == ["ch000.png", "ch001.png", "ch002.png", "ch007.png"]
    assert Image.open(out / "overview.png").size[0] > 100
    entry = doc["maps"][3]["top"][0]
    assert entry["image_name"].endswith(".jpg") and len(entry["box"]) == 4
    from introspect.images import ImageFolderDataset
    from introspect_deconv import top_k

    model = load_model(files["model"])
    api = top_k(model, ImageFolderDataset(files["data"], Preprocess.from_meta(model.introspect_meta)), layer="conv5",
                k=3, channels=[0, 1, 2, 7], project=False)
    assert [[e["image"] for e in m["top"]] for m in doc["maps"]] == api.image_index.tolist()


def test_top_interrupted_writes_nothing(files, tmp_path, monkeypatch):
    from introspect.images import ImageFolderDataset

    original = ImageFolderDataset.__getitem__

    def flaky(self, index):
        if index == 4:
            raise KeyboardInterrupt
        return original(self, index)

    monkeypatch.setattr(ImageFolderDataset, "__getitem__", flaky)
    out = tmp_path / "t"
    result = CliRunner().invoke(build_cli(), ["top", str(files["model"]), str(files["data"]), "--out", str(out),
                                              "--batch-size", "2"])
    assert result.exit_code != 0
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_top_reports_a_bad_image_in_one_line(files, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(files["data"], data)
    (data / "b" / "broken.jpg").write_bytes(b"not an image")
    for workers in ("0", "2"):
        result = run(["top", files["model"], data, "--workers", workers, "--out", tmp_path / "t"])
        assert result.exit_code == 1
        assert "broken.jpg" in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert not (tmp_path / "t").exists()


def test_help_texts():
    for command in ("deconv", "top"):
        result = run([command, "--help"])
        assert result.exit_code == 0
        for option in ("--out", "--json", "--device", "--layer"):
            assert option in result.output
    assert "--top-maps" in run(["deconv", "--help"]).output
    assert "--workers" in run(["top", "--help"]).output
