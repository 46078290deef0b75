"""``introspect invariance``: files, CSV, JSON, defaults and one-line errors that write nothing."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from conftest import invoke
from introspect.images import Preprocess, load_images
from introspect.models import load_model
from introspect.output import MANIFEST


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(path)
    return path


def test_help_lists_every_option():
    result = invoke("invariance", "--help")
    assert result.exit_code == 0
    for option in ("--transform", "--values", "--range", "--layer", "--target", "--fill", "--batch-size",
                   "--device", "--out", "--json", "--arch", "--trust-pickle"):
        assert option in result.output


def test_writes_plots_csv_arrays_and_json(tiny_checkpoint, photo, astronaut, tmp_path):
    out = tmp_path / "inv"
    result = invoke("invariance", tiny_checkpoint, photo, astronaut, "--range", "-8:8:4", "--target", "cat",
                    "--target", "2", "--out", out, "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["values"] == [-8.0, -4.0, 0.0, 4.0, 8.0] and summary["transform"] == "translate"
    assert [i["target_name"] for i in summary["images"]] == ["cat", "bird"]
    assert [layer["alias"] for layer in summary["layers"]] == ["conv1", "fc7"]
    expected = {"distance_conv1.png", "distance_fc7.png", "probability.png", "figure.png", "invariance.csv",
                "distance.npy", "prob.npy", "label.npy", "values.npy", "norm.npy", "input.npy", "result.json"}
    assert set(summary["files"]) == expected == {p.name for p in out.iterdir()} - {MANIFEST}
    distance, prob = np.load(out / "distance.npy"), np.load(out / "prob.npy")
    assert distance.shape == (2, 5, 2) and prob.shape == (2, 5) and np.load(out / "label.npy").shape == (2, 5)
    assert (distance[:, 2] == 0).all() and (distance[:, [0, 1, 3, 4], 0] > 0).all()
    # the saved input is the images the command read, and prob is the softmax of the shifted copies
    model = load_model(tiny_checkpoint)
    x = load_images([photo, astronaut], Preprocess.from_meta(model.introspect_meta))
    np.testing.assert_array_equal(np.load(out / "input.npy"), x.numpy())
    shifted = torch.zeros_like(x[1])
    shifted[:, 4:] = x[1, :, :-4]
    with torch.no_grad():
        p = torch.softmax(model(shifted[None]), 1)[0, 2]
    assert abs(float(p) - prob[1, 3]) < 1e-5
    rows = list(csv.DictReader((out / "invariance.csv").open()))
    assert len(rows) == 10
    assert list(rows[0]) == ["image", "value", "distance_conv1", "distance_fc7", "prob", "label", "label_name"]
    assert [r["image"] for r in rows] == ["chelsea"] * 5 + ["astronaut"] * 5
    np.testing.assert_allclose([float(r["distance_fc7"]) for r in rows], distance[..., 1].reshape(-1))
    np.testing.assert_allclose([float(r["prob"]) for r in rows], prob.reshape(-1), rtol=1e-6)
    figure = np.asarray(Image.open(out / "figure.png"))
    assert figure.ndim == 3 and figure.shape[1] > 3 * figure.shape[0]
    assert json.loads((out / "result.json").read_text())["images"][1]["target"] == 2


def test_bundled_defaults_use_the_true_classes(tmp_path):
    result = invoke("invariance", "--transform", "rotate", "--values", "0,90,180", "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    assert "5 bundled images" in result.stderr and "true classes" in result.stderr
    assert "rotate: 3 values from 0 to 180 degrees, 5 images" in result.stdout
    assert "0_ankle_boot: p(Ankle boot) [true class]" in result.stdout
    saved = json.loads((tmp_path / "b" / "result.json").read_text())
    assert saved["targets_given"] and [i["target_name"] for i in saved["images"]][:2] == ["Ankle boot", "Dress"]


def test_an_image_alone_is_taken_as_the_image(photo, tmp_path):
    result = invoke("invariance", photo, "--transform", "scale", "--values", "1,1.5", "--layer", "conv2",
                    "--out", tmp_path / "s", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["input_shape"] == [1, 3, 32, 32] and summary["layers"][0]["alias"] == "conv2"
    assert not summary["targets_given"] and (tmp_path / "s" / "distance_conv2.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--transform", "shear"], "unknown transform 'shear'"),
    (["--range", "0:8:0"], "STEP must be non-zero"),
    (["--range", "8:0:2"], "STEP must be non-zero and go from START towards STOP"),
    (["--range", "a:b"], "must be START:STOP:STEP"),
    (["--values", "1,x"], "not a comma-separated list"),
    (["--values", "0,1", "--range", "0:4:1"], "either --values or --range"),
    (["--target", "cat", "--target", "dog", "--target", "bird"], "got 3 targets for 2 images"),
    (["--layer", "conv9"], "unknown layer 'conv9'"),
    (["--transform", "scale", "--values", "0,1"], "scale factors must be positive"),
])
def test_bad_input_is_one_line_and_writes_nothing(tiny_checkpoint, photo, astronaut, tmp_path, args, message):
    out = tmp_path / "never"
    result = invoke("invariance", tiny_checkpoint, photo, astronaut, *args, "--out", out)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.glob(".never*"))
