"""Bad input: one clear line naming the problem and the fix, non-zero exit, no traceback, and no
half-written output."""
from __future__ import annotations

import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from conftest import invoke


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width x height`` pixels (a decompression bomb's calling card)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))


class Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.target),))


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_checkpoint, photo):
    d = tmp_path_factory.mktemp("bad")
    f = {"ckpt": tiny_checkpoint, "photo": photo, "dir": d}
    (d / "empty.pt").write_bytes(b"")
    (d / "garbage.pt").write_bytes(np.random.default_rng(0).bytes(5000))
    data = tiny_checkpoint.read_bytes()
    (d / "truncated.pt").write_bytes(data[: len(data) // 2])
    (d / "config.json").write_text('{"not": "a model"}')
    with open(d / "evil.pt", "wb") as fh:
        pickle.dump(Evil(str(d / "pwned")), fh)
    torch.save(torchvision.models.vgg11(num_classes=3).state_dict(), d / "vgg.pth")
    (d / "bad.safetensors").write_bytes(b"\xff" * 8 + b"{}")
    (d / "empty.png").write_bytes(b"")
    (d / "garbage.jpg").write_bytes(np.random.default_rng(1).bytes(3000))
    png = photo.read_bytes()
    (d / "truncated.png").write_bytes(png[: len(png) // 3])
    (d / "notes.png").write_text("this is text, not an image")
    png_header_only(d / "bomb.png", 30000, 30000)
    (d / "a_file").write_text("x")
    (d / "empty_folder").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "one.png")
    return f


def run(args):
    return invoke(*args, catch_exceptions=True)


def C(f, *rest):
    """Resolve ``@name`` placeholders into paths of the fixture files."""
    out = []
    for a in rest:
        if isinstance(a, str) and a.startswith("@"):
            key = a[1:]
            out.append(f[key] if key in f else f["dir"] / key)
        else:
            out.append(a)
    return out


CASES = [
    # (id, argv with @placeholders, words the message must contain)
    ("missing model", ["layers", "@nope.pt"], ["not found", "check the path"]),
    ("empty model", ["layers", "@empty.pt"], ["empty"]),
    ("corrupt model", ["layers", "@garbage.pt"], ["corrupt", "check the file"]),
    ("truncated model", ["layers", "@truncated.pt"], ["corrupt"]),
    ("model is a folder", ["layers", "@empty_folder"], ["folder"]),
    ("pickle with code", ["layers", "@evil.pt"], ["--trust-pickle", "arbitrary code"]),
    ("wrong architecture", ["layers", "@vgg.pth", "--arch", "zfnet"], ["do not fit", "shape", "--arch"]),
    ("state dict without arch", ["layers", "@vgg.pth"], ["pass --arch"]),
    ("unknown arch", ["layers", "--arch", "zfnett"], ["unknown architecture", "did you mean 'zfnet'"]),
    ("arch conflicts with checkpoint", ["layers", "@ckpt", "--arch", "vgg11"], ["checkpoint", "--arch"]),
    ("json as model", ["layers", "@config.json"], ["corrupt", "check the file"]),
    ("corrupt safetensors", ["layers", "@bad.safetensors", "--arch", "zfnet"], ["safetensors"]),
    ("cuda without gpu", ["layers", "@ckpt", "--device", "cuda"], ["no CUDA GPU", "--device cpu"]),
    ("unknown device", ["layers", "@ckpt", "--device", "tpu"], ["unknown device", "auto, cpu or cuda"]),
    ("image given as model", ["deconv", "@photo"], ["looks like an image"]),
    ("missing image", ["deconv", "@ckpt", "@nope.jpg"], ["not found"]),
    ("empty image", ["deconv", "@ckpt", "@empty.png"], ["empty"]),
    ("corrupt image", ["deconv", "@ckpt", "@garbage.jpg"], ["image"]),
    ("truncated image", ["deconv", "@ckpt", "@truncated.png"], ["truncated"]),
    ("text file as image", ["deconv", "@ckpt", "@notes.png"], ["not an image"]),
    ("decompression bomb", ["deconv", "@ckpt", "@bomb.png"], ["too large", "resize"]),
    ("image is a folder", ["deconv", "@ckpt", "@empty_folder"], ["folder"]),
    ("unknown layer", ["deconv", "@ckpt", "@photo", "--layer", "conv6"], ["unknown layer", "did you mean"]),
    ("channel out of range", ["deconv", "@ckpt", "@photo", "--layer", "conv5", "--channel", "99"], ["channel", "99"]),
    ("unwritable out", ["deconv", "@ckpt", "@photo", "--out", "@a_file"], ["cannot write", "--out"]),
    ("occluder larger than image", ["occlusion", "@ckpt", "@photo", "--size", "500"], ["size"]),
    ("unknown fill", ["occlusion", "@ckpt", "@photo", "--fill", "pink"], ["fill"]),
    ("unknown target class", ["occlusion", "@ckpt", "@photo", "--target", "zebra"], ["zebra"]),
    ("top on empty folder", ["top", "@ckpt", "@empty_folder", "--layer", "conv5"], ["no images", "empty_folder"]),
    ("top on missing folder", ["top", "@ckpt", "@nowhere", "--layer", "conv5"], ["nowhere"]),
    (
        "correspondence with one image",
        ["correspondence", "@ckpt", "@photo", "--parts", "@parts.json"],
        ["pairs", "at least 2 images"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clean_line(files, tmp_path, case):
    name, argv, words = case
    if name == "correspondence with one image":
        (files["dir"] / "parts.json").write_text('{"eye": [10, 10, 20, 20]}')
    args = C(files, *argv)
    if "--out" not in args and args[0] != "layers":
        args += ["--out", tmp_path / "out"]
    result = run(args)
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert not (files["dir"] / "pwned").exists()


def test_at_least_25_bad_inputs():
    assert len(CASES) >= 25
