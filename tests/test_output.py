"""introspect.output: output folders that are always whole (staging, manifest, lock, one-step swap,
signals, leftovers of killed runs, full disks, mount points), save_png, jsonable, csv_text."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from introspect import output, render
from introspect.errors import IntrospectError
from introspect.output import MANIFEST, OutputDir, csv_text, is_output_folder, jsonable, read_manifest, save_png


def _one_line(excinfo, *words):
    message = str(excinfo.value)
    assert "\n" not in message and ";" in message, message
    for word in words:
        assert word in message, message


def _hidden(folder: Path) -> list[str]:
    """Hidden entries: staging folders, aside copies, lock files."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _contents(folder: Path) -> dict[str, bytes]:
    """The files of ``folder`` (the manifest left out)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


def _write(out, files: dict[str, str], **kwargs) -> OutputDir:
    with OutputDir(out, **kwargs) as od:
        for name, text in files.items():
            od.save_text(name, text)
    return od


def test_render_reexports_the_output_helpers():
    assert render.OutputDir is OutputDir and render.save_png is save_png
    assert render.jsonable is jsonable and render.csv_text is csv_text


# --------------------------------------------------------------------------------------------------
# all or nothing, manifest
# --------------------------------------------------------------------------------------------------
def test_output_dir_moves_files_on_success_with_a_manifest(tmp_path):
    out = tmp_path / "runs" / "cat"
    picture = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    with OutputDir(out, command="introspect test", options={"k": 3, "out": out}) as od:
        od.save_png("top9.png", picture)
        od.save_npy("acts.npy", torch.arange(4.0))
        od.save_json("meta.json", {"layer": "conv5", "score": np.float32(0.5), "box": (1, 2),
                                   "n": np.int64(3), "t": torch.tensor(2.0)})
        od.save_text("sub/readme.txt", "hello")
        assert not out.exists()  # nothing visible before the end
        probe = od.path("probe.bin")
        probe.write_bytes(b"1")
        staging = probe.parent
        assert is_output_folder(staging)  # data-set readers skip a staging folder too
        assert os.stat(staging).st_dev == os.stat(out.parent).st_dev
    assert od.files == [out / "acts.npy", out / "meta.json", out / "probe.bin", out / "sub" / "readme.txt",
                        out / "top9.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(out / "top9.png")), picture)
    np.testing.assert_array_equal(np.load(out / "acts.npy"), np.arange(4.0))
    assert json.loads((out / "meta.json").read_text()) == {
        "layer": "conv5", "score": 0.5, "box": [1, 2], "n": 3, "t": 2.0}
    assert (out / "sub" / "readme.txt").read_text() == "hello"
    manifest = read_manifest(out)
    assert manifest["command"] == "introspect test" and manifest["options"] == {"k": 3, "out": str(out)}
    assert manifest["files"] == ["acts.npy", "meta.json", "probe.bin", "sub/readme.txt", "top9.png"]
    from introspect import __version__
    assert manifest["introspect"] == __version__
    assert is_output_folder(out) and _hidden(out.parent) == []
    old = os.umask(0o022)
    try:
        _write(tmp_path / "mode", {"a.txt": "x"})
    finally:
        os.umask(old)
    assert (tmp_path / "mode").stat().st_mode & 0o777 == 0o755


def test_output_dir_leaves_nothing_when_the_body_raises(tmp_path):
    out = tmp_path / "result"
    with pytest.raises(RuntimeError):
        with OutputDir(out) as od:
            od.save_text("half.txt", "partial")
            raise RuntimeError("boom")
    assert not out.exists() and _hidden(tmp_path) == [] and od.files == []
    _write(out, {"a.txt": "old"})
    with pytest.raises(KeyboardInterrupt):
        with OutputDir(out) as od:
            od.save_text("a.txt", "new")
            raise KeyboardInterrupt
    assert _contents(out) == {"a.txt": b"old"} and _hidden(tmp_path) == []


def test_manifest_records_the_click_command_and_options(tmp_path):
    import click
    from click.testing import CliRunner

    @click.command("demo")
    @click.option("--k", type=int)
    @click.option("--out", type=click.Path(path_type=Path))
    def demo(k, out):
        _write(out, {"x.txt": "1"})

    result = CliRunner().invoke(demo, ["--k", "4", "--out", str(tmp_path / "o")], catch_exceptions=False)
    assert result.exit_code == 0
    manifest = read_manifest(tmp_path / "o")
    assert manifest["command"] == "demo" and manifest["options"] == {"k": 4, "out": str(tmp_path / "o")}


# --------------------------------------------------------------------------------------------------
# foreign folders are refused, reruns replace the whole folder
# --------------------------------------------------------------------------------------------------
def test_a_folder_with_foreign_files_is_refused_and_untouched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "holiday.jpg").write_text("mine")
    with pytest.raises(IntrospectError) as excinfo:
        with OutputDir(out):
            pytest.fail("the body must not run")
    _one_line(excinfo, "holiday.jpg", "did not write", "choose a new or empty folder")
    assert _contents(out) == {"holiday.jpg": b"mine"} and _hidden(tmp_path) == []
    # a user's file added to a folder introspect wrote is never deleted either
    _write(tmp_path / "own", {"a.txt": "1"})
    (tmp_path / "own" / "notes.txt").write_text("mine")
    (tmp_path / "own" / "empty").mkdir()
    with pytest.raises(IntrospectError) as excinfo:
        _write(tmp_path / "own", {"b.txt": "2"})
    _one_line(excinfo, "'empty'", "did not write")
    assert (tmp_path / "own" / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(IntrospectError) as excinfo:
        _write(tmp_path / "file", {"b.txt": "2"})
    _one_line(excinfo, "is a file")


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_rerun_replaces_the_whole_folder(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(output, "_exchange", lambda a, b: False)
    out = tmp_path / "out"
    out.mkdir()  # an empty folder is fine
    _write(out, {f"channels/ch{i:03d}.png": str(i) for i in range(4)} | {"top.json": "all"})
    _write(out, {"channels/ch000.png": "new", "top.json": "two"})
    assert _contents(out) == {"channels/ch000.png": b"new", "top.json": b"two"}
    assert read_manifest(out)["files"] == ["channels/ch000.png", "top.json"]
    assert _hidden(tmp_path) == []


def test_duplicate_and_reserved_output_names_are_refused(tmp_path):
    with pytest.raises(IntrospectError) as excinfo:
        with OutputDir(tmp_path / "o") as od:
            od.save_npy("pairs_a_b.npy", np.zeros(2))
            od.save_npy("pairs_a_b.npy", np.ones(2))
    _one_line(excinfo, "same file name", "pairs_a_b.npy")
    assert not (tmp_path / "o").exists()
    with OutputDir(tmp_path / "o") as od:
        for bad in ("../escape.png", "/abs.png", MANIFEST, ".introspect-lock"):
            with pytest.raises(IntrospectError):
                od.path(bad)
        with pytest.raises(IntrospectError):
            od.save_png("bad.png", np.zeros((4, 4, 3), np.float32))
        od.path("x/y/z.bin").write_bytes(b"1")
    assert (tmp_path / "o" / "x" / "y" / "z.bin").read_bytes() == b"1"
    with pytest.raises(IntrospectError):
        od.path("late.png")


def test_a_symlinked_out_is_written_through(tmp_path):
    real = tmp_path / "real"
    _write(real, {"a.txt": "1"})
    (tmp_path / "link").symlink_to(real)
    _write(tmp_path / "link", {"b.txt": "2"})
    assert (tmp_path / "link").is_symlink() and read_manifest(real)["files"] == ["b.txt"]


# --------------------------------------------------------------------------------------------------
# unwritable folders, full disks (injected), file names too long
# --------------------------------------------------------------------------------------------------
def test_output_dir_unwritable(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(IntrospectError) as excinfo:
        _write(blocker / "out", {"a": "1"})
    _one_line(excinfo, "cannot write to output folder", "choose another --out")
    (tmp_path / "out").mkdir()
    monkeypatch.setattr("introspect.output.os.access", lambda path, mode: False)
    with pytest.raises(IntrospectError) as excinfo:
        with OutputDir(tmp_path / "out"):
            pytest.fail("the body must not run")
    _one_line(excinfo, "cannot write to output folder", "permission denied", "choose another --out")


def test_name_too_long_is_one_line(tmp_path):
    with pytest.raises(IntrospectError) as excinfo:
        _write(tmp_path / "o", {"a" * 300 + ".png": "x"})
    _one_line(excinfo, "too long", "shorter name")
    with pytest.raises(IntrospectError) as excinfo:
        _write(tmp_path / ("o" * 300), {"a.png": "x"})
    _one_line(excinfo, "too long")
    assert _hidden(tmp_path) == [] and not (tmp_path / "o").exists()


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["np.save", "write_text", "manifest", "rename", "torch.save"])
def test_injected_enospc_keeps_the_old_folder_whole(tmp_path, monkeypatch, where):
    out = tmp_path / "out"
    _write(out, {"old.txt": "old"})
    before = _contents(out)

    def body(od):
        od.save_text("new.txt", "new")
        od.save_npy("a.npy", np.arange(3))
        torch.save({"w": torch.zeros(2)}, od.path("w.pt"))

    if where == "np.save":
        monkeypatch.setattr(np, "save", _enospc)
    elif where == "write_text":
        monkeypatch.setattr(Path, "write_text", _enospc)
    elif where == "manifest":
        monkeypatch.setattr(OutputDir, "_write_manifest",
                            lambda self, folder, files: _enospc() if files else None)
    elif where == "rename":
        monkeypatch.setattr(output, "_exchange", lambda a, b: False)
        monkeypatch.setattr(output.os, "rename", _enospc)
    else:
        def failing_save(obj, f, *a, **k):
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")
        monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(IntrospectError) as excinfo:
        with OutputDir(out) as od:
            body(od)
    monkeypatch.undo()
    _one_line(excinfo, "cannot write to output folder", "disk")
    assert _contents(out) == before and _hidden(tmp_path) == []


# --------------------------------------------------------------------------------------------------
# a real small file system: full disk, mount point
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def small_fs(tmp_path):
    """A 1 MiB tmpfs mounted at tmp_path/mnt (needs root and mount rights)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_full_disk_on_a_real_small_file_system(small_fs):
    out = small_fs / "result"
    _write(out, {"old.txt": "old"})
    before = _contents(out)
    with pytest.raises(IntrospectError) as excinfo:
        with OutputDir(out) as od:
            for i in range(8):
                od.save_npy(f"big{i}.npy", np.zeros(40_000))  # 320 kB each, 2.5 MB in all
    _one_line(excinfo, "no space left", "free some space")
    assert _contents(out) == before and _hidden(small_fs) == []


def test_out_is_a_mount_point(small_fs, monkeypatch):
    """--out on another file system than its parent: staged inside it, never copied across."""
    _write(small_fs, {"a.txt": "1", "sub/b.txt": "2"})
    assert read_manifest(small_fs)["files"] == ["a.txt", "sub/b.txt"]
    _write(small_fs, {"c.txt": "3"})  # rerun: the old files go
    assert sorted(_contents(small_fs)) == ["c.txt"] and _hidden(small_fs) == [MANIFEST]
    with pytest.raises(IntrospectError) as excinfo:  # fills the disk: the old folder stays whole
        with OutputDir(small_fs) as od:
            od.save_text("d.txt", "4")
            for i in range(8):
                od.save_npy(f"big{i}.npy", np.zeros(40_000))
    _one_line(excinfo, "no space left")
    assert sorted(_contents(small_fs)) == ["c.txt"] and _hidden(small_fs) == [MANIFEST]
    # a rename failing half-way through is undone
    real_rename, calls = os.rename, []

    def flaky(a, b):
        calls.append(a)
        if len(calls) == 3:
            raise OSError(errno.EIO, "injected")
        real_rename(a, b)

    monkeypatch.setattr(output.os, "rename", flaky)
    with pytest.raises(IntrospectError):
        _write(small_fs, {"e.txt": "5", "f.txt": "6"})
    monkeypatch.undo()
    assert sorted(_contents(small_fs)) == ["c.txt"] and _hidden(small_fs) == [MANIFEST]
    assert read_manifest(small_fs)["files"] == ["c.txt"]


# --------------------------------------------------------------------------------------------------
# two runs at once, signals, leftovers of killed runs
# --------------------------------------------------------------------------------------------------
HOLDER = textwrap.dedent("""
    import sys, time
    from introspect.output import OutputDir
    with OutputDir(sys.argv[1]) as od:
        od.save_text("a.txt", "from the child")
        print("ready", flush=True)
        time.sleep(60)
""")


@pytest.fixture(scope="module")
def holders(tmp_path_factory):
    """Four processes (started together: importing torch is slow), each holding an OutputDir open
    on its own folder with one file staged: name -> (process, out)."""
    root = tmp_path_factory.mktemp("holders")
    started = {}
    for name in ("lock", "SIGTERM", "SIGHUP", "SIGINT"):
        (root / name).mkdir()
        out = root / name / "out"
        started[name] = (subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True), out)
    for child, _ in started.values():
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
    yield started
    for child, _ in started.values():
        if child.poll() is None:
            child.kill()
        child.wait()


def test_a_second_run_into_the_same_out_fails_at_once_naming_the_first(holders):
    child, out = holders["lock"]
    began = time.monotonic()
    with pytest.raises(IntrospectError) as excinfo:
        _write(out, {"b.txt": "from the test"})
    assert time.monotonic() - began < 2
    _one_line(excinfo, f"process {child.pid}", "choose another --out")
    child.kill()  # SIGKILL: nothing can clean up
    child.wait()
    # the killed run's staging folder is cleaned by the next run, which succeeds
    assert [n for n in _hidden(out.parent) if ".introspect-stage-" in n]
    _write(out, {"b.txt": "from the test"})
    assert _contents(out) == {"b.txt": b"from the test"} and _hidden(out.parent) == []
    with OutputDir(out):  # in one process, a nested run into the same folder is refused too
        with pytest.raises(IntrospectError):
            _write(out, {"c.txt": "x"})


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_signals_clean_up_like_ctrl_c(holders, sig):
    child, out = holders[sig]
    child.send_signal(getattr(signal, sig))
    assert child.wait(timeout=30) != 0
    assert not out.exists() and _hidden(out.parent) == [], _hidden(out.parent)


def test_leftovers_of_killed_runs_are_removed_or_restored(tmp_path):
    out = tmp_path / "out"
    (tmp_path / ".out.introspect-stage-abc123").mkdir()
    (tmp_path / ".out.tmp-a1b2c3d4").mkdir()  # staging of earlier versions
    (tmp_path / ".out.tmp-a1b2c3d4" / "x.png").write_text("x")
    (tmp_path / ".other.introspect-stage-1").mkdir()  # another folder's: left alone
    # a run killed between "old folder aside" and "new folder in": the old one is put back
    _write(tmp_path / "aside", {"kept.txt": "old"})
    os.rename(tmp_path / "aside", tmp_path / ".out.introspect-old-xyz")
    _write(out, {"new.txt": "new"})
    assert _contents(out)["new.txt"] == b"new" and "kept.txt" not in _contents(out)
    assert _hidden(tmp_path) == [".other.introspect-stage-1"]


# --------------------------------------------------------------------------------------------------
# single files and values
# --------------------------------------------------------------------------------------------------
def test_save_png_is_atomic_and_checks_input(tmp_path):
    array = np.random.default_rng(2).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    path = save_png(tmp_path / "deep" / "pic.png", array)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), array)
    save_png(path, array[:, :, 0])
    assert Image.open(path).mode == "L"
    assert sorted(p.name for p in path.parent.iterdir()) == ["pic.png"]
    # readable like any file the user's umask allows, not private as a temp file
    old = os.umask(0o022)
    try:
        assert save_png(tmp_path / "mode.png", array).stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)
    with pytest.raises(IntrospectError):
        save_png(tmp_path / "f.png", array.astype(np.float64))
    (tmp_path / "blocker").write_text("x")
    with pytest.raises(IntrospectError) as excinfo:
        save_png(tmp_path / "blocker" / "p.png", array)
    _one_line(excinfo, "choose another --out")


def test_jsonable():
    assert jsonable({np.int64(1): (np.float32(0.5), torch.tensor([1, 2]))}) == {1: [0.5, [1, 2]]}
    # strict JSON has no NaN or infinity: they become null, also inside arrays and tensors
    assert jsonable([float("nan"), np.float32("inf"), torch.tensor([1.0, float("-inf")]), np.array([np.nan])]) == \
        [None, None, [1.0, None], [None]]
    assert jsonable({"s": {3, 1}, "a": np.eye(2, dtype=np.uint8)}) == {"s": [1, 3], "a": [[1, 0], [0, 1]]}


def test_csv_text_and_save_csv_round_trip(tmp_path):
    import csv

    from introspect.render import OutputDir, csv_text

    rows = [{"layer": "conv1", "distance": 0.5, "note": None}, {"layer": "fc7, top", "distance": 2, "note": "a\"b"}]
    assert csv_text(rows) == 'layer,distance,note\nconv1,0.5,\n"fc7, top",2,"a""b"\n'
    assert csv_text([], ["a", "b"]) == "a,b\n"
    with pytest.raises(IntrospectError):
        csv_text([])
    with OutputDir(tmp_path / "o") as od:
        od.save_csv("t.csv", rows, ["distance", "layer"])
    back = list(csv.DictReader(open(tmp_path / "o" / "t.csv")))
    assert back == [{"distance": "0.5", "layer": "conv1"}, {"distance": "2", "layer": "fc7, top"}]


# --------------------------------------------------------------------------------------------------
# training run folders
# --------------------------------------------------------------------------------------------------
def test_run_folder_adds_files_one_by_one_and_records_the_run(tmp_path):
    from introspect.output import RunFolder, check_run_folder

    out = tmp_path / "run"
    with RunFolder(out, epochs=2) as run:
        run.write("epoch_001.pt", lambda p: torch.save({"w": torch.ones(2)}, p))
        assert read_manifest(out)["files"] == ["epoch_001.pt"] and not read_manifest(out)["finished"]
        with pytest.raises(IntrospectError):  # a second run into the folder meanwhile
            with RunFolder(out, resume=True):
                pass
        run.save_json("metrics.json", {"epoch": 1})
        with pytest.raises(IntrospectError):
            run.write("../x.pt", lambda p: None)
        run.finish()
    manifest = read_manifest(out)
    assert manifest["kind"] == "run" and manifest["finished"] and manifest["epochs"] == 2
    assert manifest["files"] == ["epoch_001.pt", "metrics.json"]
    assert _hidden(tmp_path) == [] and sorted(p.name for p in out.iterdir()) == [MANIFEST, "epoch_001.pt",
                                                                                 "metrics.json"]
    with pytest.raises(IntrospectError) as excinfo:
        check_run_folder(out)
    _one_line(excinfo, "finished training run (2 epochs)", "--resume", "--force")
    with pytest.raises(IntrospectError):  # other commands never replace a run's checkpoints
        _write(out, {"a.txt": "x"})
    (out / "notes.txt").write_text("mine")
    with RunFolder(out, force=True, epochs=1) as run:  # listed files go, the user's stay
        pass
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "notes.txt"]


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos")])
def test_a_checkpoint_that_cannot_be_written_leaves_the_earlier_ones_whole(tmp_path, error):
    from introspect.output import RunFolder

    out = tmp_path / "run"

    def failing(path):
        path.write_bytes(b"half")
        raise error

    with RunFolder(out, epochs=3) as run:
        run.write("epoch_001.pt", lambda p: p.write_bytes(b"whole"))
        with pytest.raises(IntrospectError) as excinfo:
            run.write("epoch_002.pt", failing)
    _one_line(excinfo, "cannot write to output folder", "disk")
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "epoch_001.pt"]
    assert (out / "epoch_001.pt").read_bytes() == b"whole" and read_manifest(out)["files"] == ["epoch_001.pt"]
