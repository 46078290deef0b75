"""The example scripts run (in reduced form where they are long) and their numbers hold up.

The two examples that train on Fashion-MNIST (`evolution_fashion_mnist.py`, the comparison part of
`filters_aliasing.py`) need Debian's data set package and minutes of CPU; their library parts are
covered by the plugin tests, and the figures they made are in examples/figures.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_invariance_example_layer1_moves_more_than_layer7(tmp_path):
    numbers = load("invariance_bundled").main(["--out", str(tmp_path)])
    assert sorted(numbers) == ["rotate", "scale", "translate"]
    for transform in numbers:
        picture = np.asarray(Image.open(tmp_path / f"invariance_{transform}.png"))
        assert picture.ndim == 3 and picture.shape[1] > picture.shape[0] > 100
    # the paper's Fig. 5: small transformations change layer 1 far more than layer 7 (relative to
    # the feature vector's norm); the README quotes these numbers
    for transform in numbers:
        near = numbers[transform]["relative_distance_nearest"]
        assert near["conv1"] > 1.5 * near["fc7"] > 0, (transform, near)
    assert numbers["translate"]["relative_distance_nearest"] == pytest.approx({"conv1": 0.376, "fc7": 0.106}, abs=2e-3)
    assert numbers["translate"]["relative_distance"] == pytest.approx({"conv1": 1.088, "fc7": 0.742}, abs=2e-3)


def test_filters_example_bundled_part(tmp_path, capsys):
    load("filters_aliasing").main(["--bundled-only", "--figures", str(tmp_path)])
    out = capsys.readouterr().out
    assert "16 filters 7x7 stride 1" in out and "0 dead" in out and "mean aliasing energy 0.000" in out
    assert {p.name for p in tmp_path.iterdir()} == {"filters_bundled_conv1.png", "filters_bundled_spectrum.png"}


def test_generalization_example_reduced(tmp_path, capsys):
    figure = tmp_path / "g.png"
    load("generalization_digits").main(["--out", str(tmp_path / "run"), "--per-class", "3", "--repeats", "1",
                                        "--figure", str(figure)])
    out = capsys.readouterr().out
    assert "layer 7 (fc7)" in out and figure.is_file()
    acc = np.load(tmp_path / "run" / "result" / "accuracy.npy")
    assert acc.shape[1:] == (2, 1) and np.all((acc >= 0) & (acc <= 1))
    assert acc.max() > 0.5  # 3 digits per class: every layer is far above chance (0.1) on the best probe
