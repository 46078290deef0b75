"""``introspect generalization``: files, table, JSON, options and one-line errors."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from conftest import invoke


def write_folder(root, classes, per, offset=0):
    """Handwritten digits (sklearn's load_digits) as PNG files, one subfolder per digit."""
    from sklearn.datasets import load_digits

    d = load_digits()
    for c in classes:
        folder = root / f"digit{c}"
        folder.mkdir(parents=True)
        for j, i in enumerate(np.flatnonzero(d.target == c)[offset:offset + per]):
            Image.fromarray(np.uint8(d.images[i] * 255 / 16)).save(folder / f"{j:03d}.png")
    return root


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("digits") / "train", [0, 1, 7], 8)


FAST = ("--layer", "conv5", "--layer", "fc7", "--max-iter", "60", "--device", "cpu")


def test_help_lists_every_option():
    result = invoke("generalization", "--help")
    assert result.exit_code == 0
    for option in ("--per-class", "--layer", "--classifier", "--test", "--repeats", "--seed", "--batch-size",
                   "--C", "--pool", "--max-dim", "--rectify", "--pixels", "--max-iter", "--device", "--out",
                   "--json", "--arch"):
        assert option in result.output


def test_writes_table_arrays_and_json(digits_dir, tmp_path):
    out = tmp_path / "gen"
    result = invoke("generalization", digits_dir, "--per-class", "2", "--per-class", "5", *FAST, "--pixels",
                    "--out", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert {"table.md", "accuracy.csv", "accuracy.npy", "accuracy_std.npy", "accuracies.npy", "result.json",
            "splits.json", "accuracy.png", "table.png", "figure.png"} == set(summary["files"])
    acc = np.load(out / "accuracy.npy")
    assert acc.shape == (3, 2, 2) and ((0 <= acc) & (acc <= 1)).all()  # pixels, conv5, fc7 x svm/softmax x 2, 5
    assert summary["classes"] == ["digit0", "digit1", "digit7"] and summary["test_sizes"] == [9]
    by_key = {(r["alias"] or r["layer"], r["classifier"], r["per_class"]): r["accuracy"] for r in summary["accuracy"]}
    assert by_key[("fc7", "svm", 5)] == pytest.approx(float(acc[2, 1, 1]))
    with open(out / "accuracy.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and float(rows[-1]["accuracy"]) == pytest.approx(float(acc[2, 1, 1]), abs=1e-6)
    splits = json.loads((out / "splits.json").read_text())[0]
    assert len(splits["train"]["5"]) == 15 and set(splits["train"]["2"]) <= set(splits["train"]["5"])
    assert sorted(splits["train"]["5"] + splits["test"]) == list(range(24))
    table = (out / "table.md").read_text()
    assert "| layer | softmax 2/class | softmax 5/class | svm 2/class | svm 5/class |" in table
    assert "| layer 7 (fc7) |" in table and "| pixels |" in table and "| layer 5 (conv5) |" in table
    for name in ("accuracy.png", "table.png"):
        picture = np.asarray(Image.open(out / name))
        assert picture.ndim == 3 and picture.shape[1] >= 200 and picture.std() > 10


def test_text_table_and_separate_test_folder(digits_dir, tmp_path):
    test_dir = write_folder(tmp_path / "test", [0, 1, 7], 3, offset=8)
    out = tmp_path / "gen"
    result = invoke("generalization", digits_dir, "--test", test_dir, "--per-class", "8", "--layer", "fc7",
                    "--classifier", "softmax", "--repeats", "2", "--max-iter", "60", "--out", out)
    assert result.exit_code == 0, result.output
    assert "layer 7 (fc7)" in result.stdout and "softmax 8/class" in result.stdout and "wrote 10 files" in result.stdout
    saved = json.loads((out / "result.json").read_text())
    assert saved["test_sizes"] == [9, 9] and saved["per_class"] == [8] and saved["classifiers"] == ["softmax"]
    assert np.load(out / "accuracies.npy").shape == (2, 1, 1, 1)


@pytest.mark.parametrize("make, args, message", [
    (None, ("--per-class", "8"), "has 8 images, too few to train on 8 per class"),
    (None, ("--layer", "conv9"), "unknown layer 'conv9'"),
    ("one", (), "has 1 class; a classifier needs at least 2"),
    ("missing", (), "DATA folder not found"),
])
def test_bad_inputs_one_line_and_no_output(digits_dir, tmp_path, make, args, message):
    data = digits_dir
    if make == "one":
        data = write_folder(tmp_path / "one", [3], 4)
    elif make == "missing":
        data = tmp_path / "nowhere"
    out = tmp_path / "out"
    result = invoke("generalization", data, *args, "--out", out)
    assert result.exit_code == 1
    assert message in result.output and result.output.count("\n") <= 2 and "Traceback" not in result.output
    assert not out.exists()


def test_test_folder_with_fewer_or_other_classes(digits_dir, tmp_path):
    fewer = write_folder(tmp_path / "fewer", [7, 1], 3, offset=8)  # digit1, digit7: indices 0, 1 of its own
    result = invoke("generalization", digits_dir, "--test", fewer, "--per-class", "8", "--layer", "fc7",
                    "--classifier", "softmax", "--max-iter", "60", "--out", tmp_path / "g", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["classes"] == ["digit0", "digit1", "digit7"] and summary["test_sizes"] == [6]
    assert summary["accuracy"][0]["accuracy"] >= 0.8  # labels shifted by one class would score ~0
    other = write_folder(tmp_path / "other", [0, 5], 2, offset=8)
    out = tmp_path / "never"
    result = invoke("generalization", digits_dir, "--test", other, "--per-class", "2", "--layer", "fc7", "--out", out)
    assert result.exit_code == 1 and "'digit5' that the training set lacks" in result.output
    assert "Traceback" not in result.output and not out.exists()
