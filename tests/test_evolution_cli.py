"""``introspect evolution``: files, JSON, options and one-line errors that write nothing."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import invoke
from introspect.cli import bundled_image_dir
from introspect.images import ImageFolderDataset, Preprocess
from introspect.models import load_model, save_checkpoint, zfnet
from introspect.output import MANIFEST
from introspect_evolution import feature_evolution

KWARGS = {"num_classes": 3, "widths": [4, 6, 6, 6, 4], "fc": 8, "pool5_size": 1}


pytestmark = pytest.mark.usefixtures("one_thread")




def checkpoint(path, seed, epoch, widths=None):
    torch.manual_seed(seed)
    kwargs = dict(KWARGS, widths=list(widths or KWARGS["widths"]))
    model = zfnet(**kwargs).eval()
    return save_checkpoint(path, model, arch="zfnet", arch_kwargs=kwargs, classes=["a", "b", "c"],
                           input_size=(3, 48, 48), mean=(0.3,) * 3, std=(0.3,) * 3, extra={"epoch": epoch})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A folder like the one `introspect train` writes: epoch_001.pt .. epoch_003.pt."""
    folder = tmp_path_factory.mktemp("run")
    for epoch in (1, 2, 3):
        checkpoint(folder / f"epoch_{epoch:03d}.pt", epoch, epoch)
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Six real photographs (scikit-image) as PNG files."""
    import skimage.data

    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "chelsea", "coffee", "camera", "rocket", "horse"):
        picture = getattr(skimage.data, name)()
        if picture.dtype == bool:
            picture = picture.astype(np.uint8) * 255
        Image.fromarray(picture).save(folder / f"{name}.png")
    return folder


def test_help_lists_every_option():
    result = invoke("evolution", "--help")
    assert result.exit_code == 0
    for option in ("--data", "--layer", "--channel", "--maps", "--batch-size", "--device", "--out", "--json"):
        assert option in result.output


def test_writes_the_grid_arrays_csv_and_json(run, photos, tmp_path):
    out = tmp_path / "evo"
    result = invoke("evolution", run, "--data", photos, "--layer", "conv1", "--layer", "conv3", "--channel", "3",
                    "--channel", "1", "--out", out, "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["epochs"] == [1, 2, 3] and doc["images_seen"] == 6
    assert doc["files"] == ["evolution.csv", "evolution.png", "evolution_conv1.npy", "evolution_conv1.png",
                            "evolution_conv3.npy", "evolution_conv3.png", "result.json"]
    assert [layer["channels"] for layer in doc["layers"]] == [[3, 1], [3, 1]]
    # the same numbers as the API on the same images, read with the checkpoints' preprocessing
    model = load_model(run / "epoch_003.pt")
    data = ImageFolderDataset(photos, Preprocess.from_meta(model.introspect_meta))
    expected = feature_evolution(run, data, layers=["conv1", "conv3"], channels=[3, 1])
    for entry in expected.layers:
        np.testing.assert_array_equal(np.load(out / f"evolution_{entry.name}.npy"), entry.projections.numpy())
    conv3 = doc["layers"][1]["maps"][0]["epochs"]
    assert [row["image"] for row in conv3] == expected["conv3"].image_index[0].tolist()
    assert conv3[0]["image_name"].endswith(".png")
    assert json.loads((out / "result.json").read_text())["layers"][0]["channels"] == [3, 1]
    lines = (out / "evolution.csv").read_text().splitlines()
    assert len(lines) == 1 + 2 * 2 * 3 and lines[1].startswith("conv1,3,1,")
    png = np.asarray(Image.open(out / "evolution_conv1.png"))
    assert png.ndim == 3 and png.shape[0] > 2 * 64 and png.shape[1] > 3 * 64
    assert "checkpoints" in result.stderr


def test_files_in_column_order_and_bundled_images_by_default(run, tmp_path):
    result = invoke("evolution", run / "epoch_003.pt", run / "epoch_001.pt", "--maps", "2", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert "no --data given: using the bundled images" in result.stderr
    assert "2 checkpoints (epochs 3, 1), 10 images" in result.stdout
    assert "conv5 (strongest at epoch 1)" in result.stdout
    assert sorted(p.name for p in (tmp_path / "o").iterdir() if p.name != MANIFEST)[0] == "evolution.csv"
    assert len(list(bundled_image_dir().glob("*.png"))) == 10


@pytest.mark.parametrize("case, message", [
    ("none", "Error: no checkpoints given"),
    ("missing", "Error: checkpoint not found"),
    ("empty_folder", "Error: no epoch_*.pt checkpoints in folder"),
    ("layer", "Error: unknown layer 'conv7'"),
    ("channel", "Error: channel 6 does not exist in layer 'conv2', which has 6 feature maps"),
    ("mismatch", "Error: checkpoint"),
    ("not_a_model", "Error: cannot read model file"),
    ("state_dict", "Error: checkpoint"),
])
def test_bad_inputs_give_one_line_and_write_nothing(run, tmp_path, case, message):
    out = tmp_path / "out"
    (tmp_path / "empty").mkdir()
    (tmp_path / "epoch_009.pt").write_bytes(b"garbage")
    wide = checkpoint(tmp_path / "wide" / "epoch_004.pt", 4, 4, widths=[4, 8, 6, 6, 4])
    torch.save(load_model(run / "epoch_001.pt").state_dict(), tmp_path / "plain.pt")
    args = {
        "none": [],
        "missing": [tmp_path / "nope.pt"],
        "empty_folder": [tmp_path / "empty"],
        "layer": [run, "--layer", "conv7"],
        "channel": [run, "--layer", "conv2", "--channel", "6"],
        "mismatch": [run, wide],
        "not_a_model": [run / "epoch_001.pt", tmp_path / "epoch_009.pt"],
        "state_dict": [run / "epoch_001.pt", tmp_path / "plain.pt"],
    }[case]
    result = invoke("evolution", *args, "--out", out)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert errors and errors[0].startswith(message) and len(errors) == 1
    assert "Traceback" not in result.output
    assert not out.exists()
    if case == "state_dict":  # the command has no --arch: the error must not ask for one
        assert "plain.pt does not name its architecture" in errors[0] and "--arch" not in errors[0]
    if case == "mismatch":
        assert "features.4.weight of shape (8, 4, 5, 5) instead of (6, 4, 5, 5)" in errors[0]
