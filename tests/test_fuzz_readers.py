"""Property-based fuzzing of the readers of user files (hypothesis): parts files, checkpoints, state
dicts, safetensors files and images, random and mutated. Every input either loads or raises
IntrospectError (one line), never another exception, and no case runs longer than a few seconds."""
from __future__ import annotations

import contextlib
import io
import json
import signal
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from introspect.errors import IntrospectError
from introspect.images import read_image
from introspect.models import load_model, save_checkpoint, zfnet
from introspect.models.load import read_safetensors

pytestmark = pytest.mark.usefixtures("one_thread")
FUZZ = settings(max_examples=30, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SECONDS = 10  # the bound on one case; a reader that hangs fails the test
KWARGS = {"num_classes": 2, "widths": [2, 2, 2, 2, 2], "fc": 4, "pool5_size": 1}


@contextlib.contextmanager
def bounded(seconds: int = SECONDS):
    def expired(signum, frame):
        raise TimeoutError(f"a reader ran longer than {seconds} s on one input")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def loads_or_refuses(read, data: bytes, suffix: str):
    """``read(path)`` on a file holding ``data``: a result, or None after a one-line IntrospectError."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"input{suffix}"
        path.write_bytes(data)
        with bounded():
            try:
                return read(path)
            except IntrospectError as exc:
                assert "\n" not in str(exc) and str(exc), repr(exc)
                return None


def mutate(data: bytes, edits, cut: int | None) -> bytes:
    out = bytearray(data)
    for at, value in edits:
        out[at % len(out)] = value
    return bytes(out[:cut] if cut is not None else out)


edits = st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(0, 255)), max_size=12)
cuts = st.none() | st.integers(0, 4096)
json_values = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner,
                                                                                      max_size=5), max_leaves=25)


# --------------------------------------------------------------------------------------------------
# parts files
# --------------------------------------------------------------------------------------------------
def read_parts(path: Path):
    from introspect_correspondence.parts import boxes_per_image, load_parts

    return boxes_per_image(load_parts(path), ["a.png", "b.png"])


@FUZZ
@given(st.binary(max_size=300))
def test_parts_reader_on_random_bytes(data):
    loads_or_refuses(read_parts, data, ".json")


@FUZZ
@given(json_values)
def test_parts_reader_on_random_json(value):
    result = loads_or_refuses(read_parts, json.dumps(value).encode(), ".json")
    if result is not None:  # what loads is one finite box per image and part
        assert all(len(boxes) == 2 and all(np.isfinite(b).all() and len(b) == 4 for b in boxes)
                   for boxes in result.values())


@FUZZ
@given(edits, cuts)
def test_parts_reader_on_mutated_files(changes, cut):
    good = json.dumps({"eye": [1, 2, 5, 6], "nose": {"a.png": [0, 0, 3, 3], "b": {"y0": 1, "x0": 1, "y1": 4,
                                                                                        "x1": 4}}}).encode()
    loads_or_refuses(read_parts, mutate(good, changes, cut), ".json")


# --------------------------------------------------------------------------------------------------
# checkpoints, state dicts, safetensors
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ck") / "tiny.pt"
    save_checkpoint(path, zfnet(**KWARGS), arch="zfnet", arch_kwargs=KWARGS, classes=["a", "b"],
                    input_size=(3, 64, 64))
    return path.read_bytes()


def read_model(path: Path):
    return load_model(path, device="cpu")


@FUZZ
@given(st.binary(max_size=600))
def test_model_reader_on_random_bytes(data):
    loads_or_refuses(read_model, data, ".pt")


@settings(FUZZ, max_examples=40)
@given(data=st.data())
def test_model_reader_on_mutated_checkpoints(checkpoint_bytes, data):
    changes = data.draw(edits)
    cut = data.draw(st.none() | st.integers(0, len(checkpoint_bytes)))
    model = loads_or_refuses(read_model, mutate(checkpoint_bytes, changes, cut), ".pt")
    if model is not None:
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 2)


checkpoint_fields = st.fixed_dictionaries({}, optional={
    "version": json_values, "arch": st.sampled_from(["zfnet", "nope"]) | json_values,
    "arch_kwargs": json_values | st.just(KWARGS), "classes": json_values, "input_size": json_values,
    "mean": json_values, "std": json_values, "aliases": json_values, "extra": json_values,
    "state_dict": json_values | st.just({"w": torch.zeros(2)}),
})


@FUZZ
@given(checkpoint_fields)
def test_model_reader_on_checkpoint_dicts_of_any_shape(fields):
    buffer = io.BytesIO()
    torch.save({"format": "introspect-checkpoint", **fields}, buffer)
    loads_or_refuses(read_model, buffer.getvalue(), ".pt")


def _safetensors(header, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


safetensors_headers = json_values | st.dictionaries(
    st.text(max_size=6), st.fixed_dictionaries({}, optional={
        "dtype": st.sampled_from(["F32", "F16", "I64", "BOOL", "X"]) | json_values,
        "shape": st.lists(st.integers(-2, 6), max_size=3) | json_values,
        "data_offsets": st.lists(st.integers(-4, 64), max_size=3) | json_values}), max_size=3)


@FUZZ
@given(safetensors_headers, st.binary(max_size=64))
def test_safetensors_reader_on_random_headers(header, data):
    state = loads_or_refuses(read_safetensors, _safetensors(header, data), ".safetensors")
    if state is not None:
        assert all(isinstance(v, torch.Tensor) for v in state.values())


@FUZZ
@given(st.binary(max_size=200))
def test_safetensors_reader_on_random_bytes(data):
    loads_or_refuses(read_safetensors, data, ".safetensors")


# --------------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------------
def _encoded(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


@FUZZ
@given(st.binary(max_size=400))
def test_image_reader_on_random_bytes(data):
    loads_or_refuses(read_image, data, ".png")


@settings(FUZZ, max_examples=40)
@given(st.sampled_from(["PNG", "JPEG", "BMP", "TIFF", "WEBP"]), edits, cuts)
def test_image_reader_on_mutated_images(fmt, changes, cut):
    image = loads_or_refuses(read_image, mutate(_encoded(fmt), changes, cut), "." + fmt.lower())
    if image is not None:
        assert image.mode == "RGB" and min(image.size) >= 1
