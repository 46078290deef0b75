"""``introspect occlusion``: files, JSON, options and one-line errors."""
from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from conftest import invoke
from introspect.images import Preprocess, preprocess_image
from introspect.models import load_model
from introspect.occluders import fill_image, occlude


def test_help_lists_every_option():
    result = invoke("occlusion", "--help")
    assert result.exit_code == 0
    for option in ("--size", "--stride", "--fill", "--target", "--layer", "--batch-size", "--approximate",
                   "--tau", "--device", "--out", "--json", "--arch", "--trust-pickle"):
        assert option in result.output


def test_writes_panels_arrays_and_json(tiny_checkpoint, photo, tmp_path):
    out = tmp_path / "occ"
    result = invoke("occlusion", tiny_checkpoint, photo, "--size", "16", "--stride", "8", "--target", "dog",
                    "--target", "2", "--layer", "conv5", "--layer", "conv1", "--out", out, "--json",
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["positions"] == [7, 7] and summary["mode"] == "incremental"
    assert [t["name"] for t in summary["targets"]] == ["dog", "bird"]
    assert {"figure.png", "prob.npy", "label.npy", "activation.npy", "input.npy", "result.json",
            "d_prob_dog.png", "d_prob_bird.png", "e_label.png", "c_projection_conv5.png",
            "b_activation_conv1.png"} <= set(summary["files"])
    assert not {"probs.npy", "activations.npy"} & set(summary["files"])
    # the arrays are the probabilities of occluded copies of the exact input the command used
    model = load_model(tiny_checkpoint)
    x = preprocess_image(photo, Preprocess.from_meta(model.introspect_meta))
    np.testing.assert_array_equal(np.load(out / "input.npy"), x.numpy())
    prob = np.load(out / "prob.npy")[0]  # the first target, dog (class 1)
    assert np.load(out / "prob.npy").shape == (2, 7, 7)
    meta = model.introspect_meta
    fill = fill_image(x, "gray", meta.mean, meta.std)
    for iy, ix in [(0, 0), (3, 5), (6, 6)]:
        y, x0 = iy * 8, ix * 8
        with torch.no_grad():
            p = torch.softmax(model(occlude(x, (y, x0, y + 16, x0 + 16), fill)), 1)[0, 1]
        assert abs(float(p) - prob[iy, ix]) < 1e-5
    assert np.load(out / "label.npy").shape == (7, 7)
    saved = json.loads((out / "result.json").read_text())
    assert [(l["name"], l["module"]) for l in saved["layers"]] == [("conv5", "features.12"), ("conv1", "features.0")]
    assert set(saved["files"]) == set(summary["files"])
    png = np.asarray(Image.open(out / "d_prob_dog.png"))
    assert png.ndim == 3 and png.shape[0] >= 224


def test_default_geometry_and_text_output(tiny_checkpoint, photo, tmp_path):
    result = invoke("occlusion", tiny_checkpoint, photo, "--out", tmp_path / "o", "--fill", "blur")
    assert result.exit_code == 0, result.output
    assert "289 occluder positions (17 x 17), size 14, stride 3, fill blur" in result.stdout
    assert "wrote" in result.stdout
    # the layer by its paper name, as in the figure and the file names; the module name stays in JSON
    assert any(line.startswith("conv5 map ") and "total rectified activation" in line
               for line in result.stdout.splitlines())
    assert "features.12" not in result.stdout and (tmp_path / "o" / "b_activation_conv5.png").exists()


def test_no_rectify_sums_the_pre_activation(tiny_checkpoint, photo, tmp_path):
    runs = {}
    for flag in ("--rectify", "--no-rectify"):
        result = invoke("occlusion", tiny_checkpoint, photo, "--size", "16", "--stride", "16", flag,
                        "--out", tmp_path / flag, "--json")
        assert result.exit_code == 0, result.output
        runs[flag] = json.loads(result.stdout)
    assert runs["--rectify"]["total"] == "rectified" and runs["--no-rectify"]["total"] == "pre-activation"
    rect, raw = runs["--rectify"]["layers"][0], runs["--no-rectify"]["layers"][0]
    assert rect["channel"] == raw["channel"] and rect["min_total"] >= 0
    # the same map: rectified totals are never below the pre-activation ones
    assert rect["clean_total"] >= raw["clean_total"] and rect["min_total"] >= raw["min_total"]


def test_approximate_reports_the_error(tiny_checkpoint, photo, tmp_path):
    result = invoke("occlusion", tiny_checkpoint, photo, "--approximate", "--tau", "0.4", "--stride", "6",
                    "--out", tmp_path / "a", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["mode"] == "approximate" and summary["tau"] == 0.4
    assert summary["approx_error"]["checked_positions"] == 16
    assert 0 <= summary["approx_error"]["prob_max_abs"] < 1


def test_an_image_alone_is_taken_as_the_image(photo, tmp_path):
    result = invoke("occlusion", photo, "--arch", "zfnet", "--size", "100", "--stride", "62", "--out",
                    tmp_path / "z", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["positions"] == [3, 3]


def test_errors_are_one_line_and_write_nothing(tiny_checkpoint, photo, tmp_path):
    cases = [
        (["--target", "cow"], "unknown target class 'cow'"),
        (["--size", "65"], "larger than the 64x64 input"),
        (["--layer", "conv7"], "unknown layer 'conv7'"),
        (["--target", "9"], "out of range"),
    ]
    for extra, message in cases:
        out = tmp_path / "never"
        result = invoke("occlusion", tiny_checkpoint, photo, *extra, "--out", out)
        assert result.exit_code == 1
        assert message in result.output and "Traceback" not in result.output
        assert len([line for line in result.output.splitlines() if line.startswith("Error")]) == 1
        assert not out.exists()
    result = invoke("occlusion", tiny_checkpoint, photo, "--fill", "pink")
    assert result.exit_code == 2 and "pink" in result.output


def test_without_model_and_image_the_bundled_ones_are_used(tiny_checkpoint, photo, tmp_path, monkeypatch):
    import introspect.cli
    import introspect.models.load

    monkeypatch.setattr(introspect.models.load, "bundled_checkpoint", lambda: tiny_checkpoint)
    monkeypatch.setattr(introspect.cli, "bundled_image", lambda: photo)
    result = invoke("occlusion", "--size", "32", "--stride", "16", "--out", tmp_path / "b", "--json")
    assert result.exit_code == 0, result.output
    assert "bundled" in result.stderr and json.loads(result.stdout)["image"] == str(photo)
