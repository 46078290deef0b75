"""The cases of "what introspect writes" through the command line: partial output, two runs at once,
stale files, a command mining its own output, tracebacks (issue: output folders always whole)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from introspect.cli import EXIT_UNEXPECTED, build_cli
from introspect.models import save_checkpoint, zfnet
from introspect.output import MANIFEST, OutputDir, read_manifest

KWARGS = {"num_classes": 3, "widths": [4, 6, 6, 6, 4], "fc": 8, "pool5_size": 1}
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("outcli")
    torch.manual_seed(0)
    ckpt = save_checkpoint(root / "zf.pt", zfnet(**KWARGS), arch="zfnet", arch_kwargs=KWARGS, input_size=(3, 64, 64),
                           classes=["a", "b", "c"])
    rng = np.random.default_rng(0)
    data = root / "data"
    data.mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(data / f"{i}.png")
    return {"model": ckpt, "data": data, "image": data / "0.png"}


def run(*args, ok=True):
    result = CliRunner().invoke(build_cli(), [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def _one_error_line(result, *words):
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    for word in words:
        assert word in lines[0], lines[0]


def _names(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def test_a_folder_in_the_way_of_an_output_name_leaves_nothing_partial(files, tmp_path):
    """What was seen: `mkdir -p OUT/overview.png` and the channel PNGs already moved in."""
    out = tmp_path / "out"
    (out / "overview.png").mkdir(parents=True)
    result = run("top", files["model"], files["data"], "--k", "2", "--channels", "0-1", "--out", out, ok=False)
    _one_error_line(result, "overview.png", "did not write", "choose a new or empty folder")
    assert [p.name for p in out.iterdir()] == ["overview.png"] and list((out / "overview.png").iterdir()) == []
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_reruns_leave_no_stale_files(files, tmp_path):
    """What was seen: a full run then --channels 0-1 left the other maps' PNGs; deconv at conv5 then
    conv4 left conv5.*."""
    out = tmp_path / "top"
    run("top", files["model"], files["data"], "--k", "2", "--channels", "0-3", "--out", out)
    assert len(list((out / "channels").iterdir())) == 4
    run("top", files["model"], files["data"], "--k", "2", "--channels", "0-1", "--out", out)
    assert sorted(p.name for p in (out / "channels").iterdir()) == ["ch000.png", "ch001.png"]
    assert len(json.loads((out / "top.json").read_text())["maps"]) == 2
    assert read_manifest(out)["files"] == _names(out)
    assert read_manifest(out)["command"].endswith("top") and read_manifest(out)["options"]["channels"] == ["0-1"]
    d = tmp_path / "deconv"
    run("deconv", files["model"], files["image"], "--layer", "conv5", "--out", d)
    run("deconv", files["model"], files["image"], "--layer", "conv4", "--out", d)
    assert _names(d) == ["conv4.npy", "conv4.png", "input.npy", "result.json"]


def test_top_never_mines_its_own_output(files, tmp_path):
    """What was seen: --out inside DATA_DIR, and the second run counted its own PNGs as images."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(files["data"], data)
    first = run("top", files["model"], data, "--k", "2", "--channels", "0", "--out", data / "out", "--json")
    second = run("top", files["model"], data, "--k", "2", "--channels", "0", "--out", data / "out", "--json")
    assert json.loads((data / "out" / "top.json").read_text())["images_seen"] == 4
    assert "note: skipping" in second.stderr and "introspect output" in second.stderr
    assert "note: skipping" not in first.stderr


def test_a_second_run_into_the_same_out_fails_at_once(files, tmp_path):
    """What was seen: two concurrent runs both exited 0 with a mix of files."""
    out = tmp_path / "out"
    with OutputDir(out) as od:
        od.save_text("x.txt", "the first run")
        result = run("top", files["model"], files["data"], "--k", "2", "--out", out, ok=False)
        _one_error_line(result, f"another introspect run (process {os.getpid()})", "choose another --out")
    assert _names(out) == ["x.txt"]


def test_a_file_name_too_long_is_one_line(files, tmp_path):
    long_image = tmp_path / ("i" * 300 + ".png")
    for args in (["deconv", files["model"], long_image, "--out", tmp_path / "o"],
                 ["layers", tmp_path / ("m" * 300 + ".pt")],
                 ["deconv", files["model"], files["image"], "--out", tmp_path / ("o" * 300)]):
        result = run(*args, ok=False)
        _one_error_line(result, "too long")


def test_device_mps_without_mps_is_one_line(files):
    if torch.backends.mps.is_available():
        pytest.skip("this build has MPS")
    _one_error_line(run("layers", files["model"], "--device", "mps", ok=False), "--device mps", "--device cpu")


@click.command("boom")
def _boom():
    raise ZeroDivisionError("division by zero in a place nobody checked")


@click.command("full")
def _full():
    raise OSError(28, "No space left on device", "/data/out/x.npy")


def test_last_line_of_defence(monkeypatch):
    cli = build_cli()
    cli.add_command(_boom)
    cli.add_command(_full)
    result = CliRunner().invoke(cli, ["boom"])
    assert result.exit_code == EXIT_UNEXPECTED and result.exit_code not in (0, 1, 2)
    assert result.output.strip().splitlines() == [
        "Error: unexpected ZeroDivisionError: division by zero in a place nobody checked; run with --debug "
        "(or INTROSPECT_DEBUG=1) for the traceback, and report it"]
    full = CliRunner().invoke(cli, ["full"])
    assert full.exit_code == 1 and full.output.strip().splitlines() == [
        "Error: /data/out/x.npy: no space left on the disk; free some space, or choose --out on another disk"]
    for args, env in ((["--debug", "boom"], {}), (["boom"], {"INTROSPECT_DEBUG": "1"})):
        debug = CliRunner().invoke(cli, args, env=env)
        assert isinstance(debug.exception, ZeroDivisionError) and "unexpected" not in debug.output


def test_debug_shows_the_traceback_in_a_real_process(tmp_path):
    too_long = str(tmp_path / ("m" * 300 + ".pt"))
    code = "from introspect.cli import main; main()"
    plain = subprocess.run([sys.executable, "-c", code, "layers", too_long], capture_output=True, text=True)
    debug = subprocess.run([sys.executable, "-c", code, "--debug", "layers", too_long], capture_output=True, text=True)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines()[-1].startswith("Error: ") and "too long" in plain.stderr
    assert debug.returncode != 0 and "Traceback (most recent call last)" in debug.stderr
    assert "File name too long" in debug.stderr


# --------------------------------------------------------------------------------------------------
# diverged weights, numeric ranges
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def diverged(files, tmp_path_factory):
    root = tmp_path_factory.mktemp("diverged")
    torch.manual_seed(0)
    model = zfnet(**KWARGS)
    with torch.no_grad():
        model.features[0].weight.fill_(float("inf"))
    ckpt = save_checkpoint(root / "inf.pt", model, arch="zfnet", arch_kwargs=KWARGS, input_size=(3, 64, 64),
                           classes=["a", "b", "c"])
    parts = root / "parts.json"
    parts.write_text(json.dumps({"eye": {"0.png": [10, 10, 20, 20], "1.png": [12, 12, 22, 22]}}))
    classes = root / "classes"
    for c in "ab":
        (classes / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((64, 64, 3), 40 + 100 * (c == "b") + i, np.uint8)).save(classes / c / f"{i}.png")
    return {"model": ckpt, "parts": parts, "classes": classes}


def test_every_command_refuses_diverged_weights(files, diverged, tmp_path):
    """What was seen: `deconv` on all-inf weights exited 0 with NaN; `occlusion` gave a traceback."""
    model, image, data = diverged["model"], files["image"], files["data"]
    commands = {
        "deconv": [model, image],
        "top": [model, data],
        "occlusion": [model, image],
        "correspondence": [model, data / "0.png", data / "1.png", "--parts", diverged["parts"]],
        "filters": [model],
        "invariance": [model, image],
        "generalization": [model, diverged["classes"], "--per-class", "1"],
        "evolution": [model],
    }
    for name, args in commands.items():
        out = tmp_path / name
        result = run(name, *args, "--out", out, ok=False)
        _one_error_line(result, "layer 'features.0' has NaN or infinite weights", "diverged")
        assert not out.exists(), name
    assert run("layers", model, ok=True).exit_code == 0  # listing layers needs no numbers


def test_refuse_diverged_names_the_layer_also_for_buffers():
    from introspect.core.device import refuse_diverged
    from introspect.errors import IntrospectError

    model = zfnet(**KWARGS)
    refuse_diverged(model)
    model.features[1].register_buffer("probe", torch.tensor([float("nan")]))
    with pytest.raises(IntrospectError, match="layer 'features.1' has NaN"):
        refuse_diverged(model)


def test_channel_ranges_are_checked_before_they_are_built(files, tmp_path, monkeypatch):
    """What was seen: `top --channels 0-2000000000` built the whole range and ran out of memory."""
    import tracemalloc

    tracemalloc.start()
    result = run("top", files["model"], files["data"], "--channels", "0-2000000000", "--out", tmp_path / "t", ok=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    _one_error_line(result, "channel 2000000000 does not exist in layer 'features.12'", "4 feature maps", "0..3")
    assert peak < 200e6
    from introspect_deconv.command import MAX_CHANNELS, parse_channels

    assert parse_channels(["0-2,5", "3"], 6, "conv5") == [0, 1, 2, 3, 5]
    for bad in ("5-2", "-1", "x", "1-"):
        with pytest.raises(Exception, match="cannot read channel"):
            parse_channels([bad])
    with pytest.raises(Exception, match="channel numbers stop below"):
        parse_channels([f"0-{MAX_CHANNELS}"])


# --------------------------------------------------------------------------------------------------
# correspondence: part names as file names, boxes that are not numbers, parts files that are not text
# --------------------------------------------------------------------------------------------------
def test_part_names_that_map_to_one_file_name_keep_their_own_files(files, tmp_path):
    """What was seen: parts `a/b`, `a b`, `a_b` overwrote each other's pairs_*.npy; a long part name
    made a file name too long for the file system."""
    parts = tmp_path / "parts.json"
    names = ["a/b", "a b", "a_b", "p" * 400]
    parts.write_text(json.dumps({name: [8 + 4 * i, 8, 24 + 4 * i, 24] for i, name in enumerate(names)}))
    out = tmp_path / "out"
    run("correspondence", files["model"], files["data"] / "0.png", files["data"] / "1.png", files["data"] / "2.png",
        "--parts", parts, "--layer", "relu5", "--random", 0, "--out", out)
    pairs = sorted(p for p in out.glob("pairs_*.npy"))
    assert len(pairs) == 4 and all(len(p.name) < 120 for p in pairs)
    doc = json.loads((out / "result.json").read_text())
    by_file = {tuple(np.load(p).ravel().round(6)) for p in pairs}
    by_name = {tuple(np.asarray(doc["pairs"][n]["relu5"], dtype=np.float64).ravel().round(6)) for n in names}
    assert len(by_name) == 4 and by_file == by_name  # each part's own matrix, none overwritten


@pytest.mark.parametrize("box", ["[NaN, 0, 4, 4]", "[0, 0, Infinity, 4]", "[true, 0, 4, 4]", "[0, null, 4, 4]"])
def test_boxes_that_are_not_numbers_are_named(files, tmp_path, box):
    """What was seen: NaN, inf and booleans in a box gave "has 4 boxes for 2 images"."""
    parts = tmp_path / "parts.json"
    parts.write_text(f'{{"eye": {box}}}')
    result = run("correspondence", files["model"], files["data"] / "0.png", files["data"] / "1.png",
                 "--parts", parts, "--out", tmp_path / "o", ok=False)
    _one_error_line(result, "is not a box", "4 finite numbers")
    assert "boxes for 2 images" not in result.output


@pytest.mark.parametrize("content", [b"\xff\xfe{\x00}", b'{"eye": ' * 100_000 + b"[1, 1, 5, 5]" + b"}" * 100_000],
                         ids=["not-utf8", "nested-100000-deep"])
def test_parts_files_that_are_not_parts_files_are_one_line(files, tmp_path, content):
    parts = tmp_path / "parts.json"
    parts.write_bytes(content)
    result = run("correspondence", files["model"], files["data"] / "0.png", files["data"] / "1.png",
                 "--parts", parts, "--out", tmp_path / "o", ok=False)
    _one_error_line(result, "parts file")


def test_damaged_checkpoints_are_one_line(files, tmp_path):
    """What was seen: a string `version`, a checkpoint without `state_dict`, a safetensors header
    that is a JSON list: tracebacks."""
    import struct

    good = torch.load(files["model"], weights_only=True)
    cases = {
        "version.pt": {**good, "version": "2"},
        "nostate.pt": {k: v for k, v in good.items() if k != "state_dict"},
        "classes.pt": {**good, "classes": 3},
        "size.pt": {**good, "input_size": [3, -64, 64]},
        "kwargs.pt": {**good, "arch_kwargs": {"no_such_argument": 1}},
    }
    for name, ckpt in cases.items():
        torch.save(ckpt, tmp_path / name)
        expected = "cannot build architecture" if name == "kwargs.pt" else str(tmp_path / name)
        _one_error_line(run("layers", tmp_path / name, ok=False), expected)
    header = b"[1, 2, 3]"
    (tmp_path / "list.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    _one_error_line(run("layers", tmp_path / "list.safetensors", "--arch", "zfnet", ok=False), "corrupt safetensors")


def test_an_image_in_a_folder_without_permission_is_one_line(files, tmp_path, monkeypatch):
    """What was seen: an image inside a folder without execute permission gave a traceback. Root
    passes every permission check, so as root the refusal of the file system is injected."""
    import errno
    import shutil

    locked = tmp_path / "locked"
    locked.mkdir()
    shutil.copy(files["image"], locked / "img.png")
    if os.geteuid() == 0:
        real_stat = os.stat

        def stat(path, *args, **kwargs):
            if str(path).startswith(str(locked) + os.sep):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_stat(path, *args, **kwargs)

        monkeypatch.setattr(os, "stat", stat)
    else:
        locked.chmod(0o600)
    try:
        result = run("deconv", files["model"], locked / "img.png", "--out", tmp_path / "o", ok=False)
    finally:
        locked.chmod(0o700)
    _one_error_line(result, "cannot read image file", "permission denied")


def test_a_refused_out_fails_before_the_work(files, tmp_path):
    """Commands that save at the end check --out first: the refusal comes before even the model
    file is read (here it does not exist)."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "holiday.jpg").write_text("mine")
    missing = tmp_path / "missing.pt"
    for args in (["occlusion", missing, files["image"]],
                 ["correspondence", missing, files["data"] / "0.png", files["data"] / "1.png", "--parts",
                  files["data"] / "0.png"],
                 ["invariance", missing, files["image"]],
                 ["generalization", missing, files["data"], "--per-class", "1"]):
        result = run(*args, "--out", mine, ok=False)
        _one_error_line(result, "holiday.jpg", "did not write")
    assert [p.name for p in mine.iterdir()] == ["holiday.jpg"]
