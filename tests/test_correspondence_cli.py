"""``introspect correspondence`` end to end on a tiny checkpoint and generated images, and the faces
example in reduced form."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import introspect
from conftest import invoke
from introspect.images import Preprocess, load_images

ROOT = Path(__file__).resolve().parent.parent
KWARGS = {"num_classes": 3, "widths": [4, 8, 8, 8, 8], "fc": 8, "pool5_size": 1}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny ZFNet checkpoint (64 x 64 input), three photographs of different sizes, a parts file."""
    import skimage.data

    root = tmp_path_factory.mktemp("corr")
    torch.manual_seed(0)
    ckpt = introspect.save_checkpoint(root / "tiny.pt", introspect.zfnet(**KWARGS).eval(), arch="zfnet",
                                      arch_kwargs=KWARGS, classes=["a", "b", "c"], input_size=(3, 64, 64),
                                      mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    cat = Image.fromarray(skimage.data.chelsea())  # 451 x 300
    paths = []
    for name, size in (("cat_wide.png", (120, 80)), ("cat_tall.jpg", (80, 100)), ("cat_square.png", (64, 64))):
        path = root / name
        cat.resize(size).save(path)
        paths.append(path)
    parts = {"eye": {"cat_wide.png": [20, 50, 36, 66], "cat_tall.jpg": [30, 20, 46, 36],
                     "cat_square.png": [16, 16, 28, 28]},
             "nose": [[40, 56, 52, 70], [50, 26, 62, 40], [30, 26, 40, 38]]}
    parts_file = root / "parts.json"
    parts_file.write_text(json.dumps(parts))
    return root, ckpt, paths, parts_file




def test_cli_end_to_end(setup):
    root, ckpt, paths, parts_file = setup
    out = root / "out"
    result = invoke("correspondence", ckpt, *paths, "--parts", parts_file, "--layer", "relu5", "--layer", "relu7",
                    "--random", 3, "--seed", 1, "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(l for l in lines if l.startswith("Occlusion location"))
    assert header.index("relu5") < header.index("relu7")
    rows = [l for l in lines if l.split()[:1] in (["eye"], ["nose"], ["random"])]
    assert [r.split()[0] for r in rows] == ["eye", "nose", "random"]
    assert all(r.count("±") == 2 for r in rows)

    names = sorted(p.name for p in out.iterdir())
    for part in ("eye", "nose"):
        for layer in ("relu5", "relu7"):
            assert f"pairs_{part}_{layer}.npy" in names and f"random_{part}_{layer}.npy" in names
    assert {"table.md", "result.json", "input.npy", "boxes.png", "pairs.png"} <= set(names)

    # the files say what the API says on the same model, images and parts
    model = introspect.load_model(ckpt, device="cpu")
    api = introspect.correspondence(model, paths, parts=parts_file, layers=["relu5", "relu7"], random_trials=3, seed=1)
    saved = json.loads((out / "result.json").read_text())
    for row in ("eye", "nose", "random"):
        for layer in ("relu5", "relu7"):
            assert saved["table"][row][layer]["mean"] == pytest.approx(api.mean[row][layer])
            assert saved["table"][row][layer]["std"] == pytest.approx(api.std[row][layer])
            text = f"{api.mean[row][layer]:.3f} ± {api.std[row][layer]:.3f}"
            assert text in (out / "table.md").read_text() and text in result.stdout
    assert np.array_equal(np.load(out / "pairs_eye_relu5.npy"), api.pairs["eye"]["relu5"].numpy())
    assert np.load(out / "random_nose_relu7.npy").shape == (3, 3, 3)
    pre = Preprocess.from_meta(introspect.meta_of(model))
    assert np.array_equal(np.load(out / "input.npy"), load_images(paths, pre).numpy())
    # cat_wide 120x80 -> 96x64 (scale 0.8), crop columns 16..80: eye [20, 50, 36, 66] -> [16, 24, 28.8, 36.8]
    assert saved["boxes"]["eye"][0] == [16, 24, 29, 37]
    assert saved["images"] == ["cat_wide.png", "cat_tall.jpg", "cat_square.png"]
    picture = np.asarray(Image.open(out / "boxes.png"))
    assert picture.ndim == 3 and picture.shape[0] > 2 * 160 and picture.shape[1] > 3 * 160


def test_cli_json_output(setup, tmp_path):
    root, ckpt, paths, parts_file = setup
    two = tmp_path / "two.json"
    two.write_text(json.dumps({"nose": [10, 10, 30, 30]}))
    result = invoke("correspondence", ckpt, *paths[:2], "--parts", two, "--random", 0, "--json",
                    "--out", tmp_path / "o", "--fill", "zero")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["parts"] == ["nose"] and data["layers"] == ["relu5", "relu7"] and data["fill"] == "zero"
    assert set(data["table"]) == {"nose"} and len(data["pairs"]["nose"]["relu5"]) == 2


@pytest.mark.parametrize("parts, message", [
    ({"eye": [70, 10, 90, 20]}, "lies outside the image (height 64, width 64)"),
    ({"eye": [10, 10, 10, 20]}, "is empty"),
    ({"eye": {"cat_wide.png": [1, 1, 5, 5]}}, "part 'eye' is missing for image 'cat_square.png'"),
    ({"eye": [[1, 1, 5, 5]]}, "has 1 boxes for 2 images"),
])
def test_cli_errors_are_one_line_and_write_nothing(setup, tmp_path, parts, message):
    root, ckpt, paths, _ = setup
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(parts))
    out = tmp_path / "never"
    result = invoke("correspondence", ckpt, paths[2], paths[0], "--parts", bad, "--out", out)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert len([l for l in result.output.splitlines() if l.startswith("Error:")]) == 1
    assert not out.exists()


def test_cli_usage_errors(setup, tmp_path):
    root, ckpt, paths, parts_file = setup
    single = invoke("correspondence", ckpt, paths[0], "--parts", parts_file, "--out", tmp_path / "x")
    assert single.exit_code == 1 and "at least 2 images" in single.output
    missing = invoke("correspondence", ckpt, *paths)
    assert missing.exit_code == 2 and "--parts" in missing.output
    yaml_file = tmp_path / "parts.yaml"
    yaml_file.write_text("eye: [30, 30, 50, 50]\n")  # inside every image's center crop
    try:
        import yaml  # noqa: F401
        has_yaml = True
    except ImportError:
        has_yaml = False
    result = invoke("correspondence", ckpt, *paths, "--parts", yaml_file, "--random", 0, "--out", tmp_path / "y")
    if has_yaml:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code == 1 and "PyYAML is not installed; write it as JSON" in result.output
    helptext = invoke("correspondence", "--help").stdout
    for option in ("--parts", "--layer", "--random", "--fill", "--seed", "--tol", "--device", "--out", "--json"):
        assert option in helptext


def load_example():
    spec = importlib.util.spec_from_file_location("correspondence_faces", ROOT / "examples" / "correspondence_faces.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_parts_sit_on_the_mean_face():
    import skimage.data

    example = load_example()
    mean_face = skimage.data.lfw_subset()[:100].mean(0)
    region = lambda b: mean_face[b[0]:b[2], b[1]:b[3]].mean()  # noqa: E731
    cheeks = region([10, 3, 14, 8]), region([10, 13, 14, 18])  # right under the eyes
    for eye, cheek in zip((example.PARTS["right_eye"], example.PARTS["left_eye"]), cheeks):
        assert region(eye) < cheek - 0.05  # the eyes are the dark bands
    nose = example.PARTS["nose"]
    eyes_mid = (example.PARTS["right_eye"][1] + example.PARTS["left_eye"][3]) / 2
    assert (nose[1] + nose[3]) / 2 == eyes_mid  # centred between the eyes
    assert region(nose) > region([nose[0], 0, nose[2], 3])  # the lit ridge, brighter than the background


def test_example_runs_in_reduced_form(tmp_path):
    example = load_example()
    summary = example.run(tmp_path, epochs=1, random_trials=2, n_small=3, n_all=6, verbose=False)
    assert 0.0 <= summary["accuracy"] <= 1.0
    for key, n in (("small", 3), ("all", 6)):
        table = summary[key]["table"]
        assert summary[key]["images"] == n
        assert list(table) == ["right_eye", "left_eye", "nose", "random"]
        for row in table.values():
            assert list(row) == ["relu5", "relu7"]
            for mean, std in row.values():
                assert 0.0 <= mean <= 1.0 and 0.0 <= std <= 0.5
        assert set(summary[key]["below_random"]) == {"relu5", "relu7"}
    assert len(list((tmp_path / "faces").glob("*.png"))) == 20
    md = (tmp_path / "correspondence_3_faces" / "table.md").read_text().splitlines()
    assert [l.split(" | ")[0] for l in md if l.count("±") == 2] == ["| right_eye", "| left_eye", "| nose", "| random"]
    assert introspect.load_model(tmp_path / "faces_zfnet.pt").introspect_meta.input_size == (1, 64, 64)
