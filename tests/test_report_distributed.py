"""``introspect report`` under ``torchrun``: two Gloo processes mine, rank 0 alone writes the same site
as one process; a setup error on one rank stops both with one line and writes nothing."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from introspect.cli import build_cli
from test_distributed import image_folder, rank_0_here_rank_1_in_a_child, torchrun_two  # noqa: F401  (image_folder: a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def report_args(checkpoint, folder, out):
    return ["report", str(checkpoint), str(folder), "--layers", "conv1,conv5", "--k", "3", "--images", "2",
            "--batch-size", "4", "--limit", "24", "--device", "cpu", "--out", str(out), "--json"]


def site_files(out):
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def test_torchrun_two_gloo_processes_build_the_one_process_site(tiny_checkpoint, image_folder, tmp_path):  # noqa: F811
    one, two = tmp_path / "one", tmp_path / "two"
    result = CliRunner().invoke(build_cli(), report_args(tiny_checkpoint, image_folder, one))
    assert result.exit_code == 0, result.output
    proc = torchrun_two(report_args(tiny_checkpoint, image_folder, two))
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)                                   # rank 0 alone printed: one JSON document
    assert doc["processes"] == 2 and json.loads(result.stdout)["processes"] == 1
    assert site_files(two) == site_files(one)
    for layer in ("conv1", "conv5"):
        ranking = json.loads((two / "data" / "layers" / layer / "top.json").read_text())
        assert ranking["images_seen"] == 24 and len({e["image"] // 4 % 2 for m in ranking["maps"]
                                                       for e in m["top"]}) == 2   # winners mined by both ranks
        assert (two / "data/layers" / layer / "top.json").read_bytes() == (one / "data/layers" / layer /
                                                                            "top.json").read_bytes()
    pictures = [f for f in site_files(one) if f.startswith(("data/layers/", "data/images/")) and f.endswith(".png")
                and "/occlusion/" not in f]
    assert len(pictures) > 100
    assert [f for f in pictures if (two / f).read_bytes() != (one / f).read_bytes()] == []
    for name in ("layers/conv5.html", "maps/conv5-c0003.html", "images/i00001.html"):
        assert (two / name).read_text() == (one / name).read_text(), name


def test_a_setup_error_on_rank_0_stops_every_rank(monkeypatch, tiny_checkpoint, image_folder, tmp_path):  # noqa: F811
    """Rank 0 runs here, rank 1 in a child process: rank 0 refuses an --out that holds other files,
    and rank 1 stops with one line naming rank 0."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = [*report_args(tiny_checkpoint, image_folder, out), "--timeout", "90"]
    here, (stdout, stderr, code) = rank_0_here_rank_1_in_a_child(monkeypatch, args)
    assert (here.exit_code, code) == (1, 1), here.output + stderr[-2000:]
    assert here.stdout == "" and stdout == ""
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith("Error: rank 0 of 2 failed, so every rank stops:"), stderr
    mine = [line for line in here.stderr.splitlines() if line.startswith("Error:")]
    assert len(mine) == 1 and str(out) in mine[0] and mine[0].split(": ", 1)[1] in errors[0]
    assert "Traceback" not in here.output + stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]                # no staging folder or lock left
