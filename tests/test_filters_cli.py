"""``introspect filters``: files, JSON, CSV against independent computations, and one-line errors."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import invoke
from introspect.cli import bundled_image_dir
from introspect.images import Preprocess, find_images, load_images
from introspect.models import load_model
from introspect.output import MANIFEST

FILES = {"filters.png", "spectrum.png", "filters.npy", "spectrum.npy", "report.csv", "result.json"}




def test_help_lists_every_option():
    result = invoke("filters", "--help")
    assert result.exit_code == 0
    for option in ("--data", "--layer", "--batch-size", "--hf-cutoff", "--norm-fraction", "--fft-size", "--device",
                   "--out", "--json", "--arch", "--trust-pickle"):
        assert option in result.output


@pytest.fixture(scope="module")
def bundled_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("filters") / "out"
    result = invoke("filters", "--out", out, "--json", "--device", "cpu", "--batch-size", "4")
    return result, out


def test_bundled_run_writes_every_file(bundled_run):
    result, out = bundled_run
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert set(summary["files"]) == FILES == {p.name for p in out.iterdir()} - {MANIFEST}
    assert summary["alias"] == "conv1" and summary["kernel_size"] == [7, 7] and summary["stride"] == [1, 1]
    assert summary["images_seen"] == len(find_images(bundled_image_dir()))
    assert json.loads((out / "result.json").read_text())["dead_count"] == summary["dead_count"]
    for name in ("filters.png", "spectrum.png"):
        picture = np.asarray(Image.open(out / name))
        assert picture.ndim == 3 and min(picture.shape[:2]) >= 200


def test_csv_and_arrays_match_independent_computations(bundled_run):
    _, out = bundled_run
    model = load_model(None)
    conv = model.features[0]
    weights = np.load(out / "filters.npy")
    np.testing.assert_array_equal(weights, conv.weight.detach().numpy())
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [int(r["index"]) for r in rows] == list(range(16))
    x = load_images(find_images(bundled_image_dir()), Preprocess.from_meta(model.introspect_meta))
    with torch.no_grad():
        peak = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding).amax((0, 2, 3)).numpy()
    norms = np.sqrt((weights.astype(np.float64) ** 2).reshape(16, -1).sum(1))
    np.testing.assert_allclose([float(r["norm"]) for r in rows], norms, rtol=1e-5)
    np.testing.assert_allclose([float(r["max_activation"]) for r in rows], peak, rtol=1e-5, atol=1e-5)
    assert all(float(r["aliasing"]) == 0 for r in rows)  # stride 1
    for r, w in zip(rows, weights.astype(np.float64)):
        power = (np.abs(np.fft.fft2(w)) ** 2).sum(0)
        f = np.fft.fftfreq(7)
        radial = np.hypot(f[:, None], f[None, :])
        assert float(r["high_frequency"]) == pytest.approx(power[radial > 0.25].sum() / power.sum(), abs=1e-5)
    assert [r["dead"] == "True" for r in rows] == list(peak <= 0)
    spectrum = np.load(out / "spectrum.npy")
    assert spectrum.shape == (16, 7, 7)


def test_text_report_and_another_layer(tiny_checkpoint, photo, tmp_path):
    data = tmp_path / "imgs"
    data.mkdir()
    Image.open(photo).save(data / "a.png")
    Image.open(photo).transpose(Image.FLIP_LEFT_RIGHT).save(data / "b.png")
    out = tmp_path / "out"
    result = invoke("filters", tiny_checkpoint, "--data", data, "--layer", "conv2", "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "conv2 (features.4): 16 filters 5x5, stride 2x2, 2 images" in result.stdout
    assert "dead:" in result.stdout and "mean aliasing energy" in result.stdout and "wrote 6 files" in result.stdout
    saved = json.loads((out / "result.json").read_text())
    assert saved["layer"] == "features.4" and saved["nyquist"] == [0.25, 0.25] and saved["images_seen"] == 2
    assert len(list(csv.DictReader((out / "report.csv").open()))) == 16


@pytest.mark.parametrize("args, message", [
    (["--layer", "relu1"], "not a convolution"),
    (["--layer", "conv9"], "unknown layer"),
    (["--data", "EMPTY"], "no images found"),
    (["--data", "MISSING"], "not found"),
    (["--hf-cutoff", "0.9"], "--hf-cutoff"),
])
def test_bad_inputs_give_one_line_and_no_files(tiny_checkpoint, tmp_path, args, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [str(empty) if a == "EMPTY" else (str(tmp_path / "nowhere") if a == "MISSING" else a) for a in args]
    out = tmp_path / "out"
    result = invoke("filters", tiny_checkpoint, *args, "--out", out, "--device", "cpu")
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_an_unwritable_out_fails_before_the_data_pass(tiny_checkpoint, tmp_path, monkeypatch):
    import introspect_filters.method as method

    passes = []
    real = method.max_activation
    monkeypatch.setattr(method, "max_activation", lambda *a, **k: passes.append(1) or real(*a, **k))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = invoke("filters", tiny_checkpoint, "--out", blocker / "out", "--device", "cpu")
    assert result.exit_code == 1 and "choose another --out" in result.output and "Traceback" not in result.output
    assert passes == [] and sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
    good = invoke("filters", tiny_checkpoint, "--out", tmp_path / "out", "--device", "cpu", "--json")
    assert good.exit_code == 0 and passes == [1]
    assert set(json.loads(good.stdout)["files"]) == FILES == {p.name for p in (tmp_path / "out").iterdir()} - {MANIFEST}
