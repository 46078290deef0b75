"""``introspect report``: the command, its options and one-line errors on bad input (no half-written site)."""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import invoke
from introspect.cli import bundled_image_dir


def one_line_error(result, *words):
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.strip().splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if "-stage-" in p.name or "-old-" in p.name or "lock" in p.name)


def test_help_lists_every_option():
    result = invoke("report", "--help")
    assert result.exit_code == 0
    for option in ("--out", "--layers", "--k", "--images", "--device", "--workers", "--batch-size", "--limit",
                   "--force", "--skip-bad", "--json", "--arch", "--trust-pickle"):
        assert option in result.output


def test_bundled_model_and_images_with_no_arguments(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("report", "--layers", "conv5", "--k", "2", "--images", "1", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    out = tmp_path / "introspect-out" / "report"
    assert (tmp_path / summary["index"]).resolve() == (out / "index.html").resolve() and (out / "index.html").is_file()
    manifest = json.loads((out / "report.json").read_text())
    assert manifest["command"] == "introspect report --layers conv5 --k 2 --images 1 --json"
    assert manifest["layers"][0]["name"] == "conv5"
    assert len(manifest["layers"][0:1]) == 1 and manifest["layers"][0]["maps"] == 64
    assert "mining conv5" in result.stderr and "image pages" in result.stderr  # progress per phase


def copy_images(tmp_path, n=3):
    folder = tmp_path / "data"
    folder.mkdir()
    for p in sorted(bundled_image_dir().glob("*.png"))[:n]:
        shutil.copy(p, folder / p.name)
    return folder


def test_empty_data_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke("report", tmp_path / "empty", "--out", tmp_path / "site")
    one_line_error(result, "no images found", "empty")
    assert not (tmp_path / "site").exists() and leftovers(tmp_path) == []


def test_corrupt_image_is_named_and_skip_bad_lists_it(tmp_path):
    folder = copy_images(tmp_path)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = invoke("report", folder, "--out", tmp_path / "site", "--layers", "conv1", "--k", "2", "--images", "1")
    one_line_error(result, "broken.png", "--skip-bad")
    assert not (tmp_path / "site").exists()
    result = invoke("report", folder, "--out", tmp_path / "site", "--layers", "conv1", "--k", "2", "--images", "1",
                    "--skip-bad", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["skipped"] == ["broken.png"]
    manifest = json.loads((tmp_path / "site" / "report.json").read_text())
    assert manifest["skipped"] == ["broken.png"]
    assert "broken.png" in (tmp_path / "site" / "index.html").read_text()
    top = json.loads((tmp_path / "site" / "data/layers/conv1/top.json").read_text())
    assert top["images_seen"] == 3


def test_out_holding_something_else_is_refused_unless_force(tmp_path):
    folder = copy_images(tmp_path, 2)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    result = invoke("report", folder, "--out", out, "--layers", "conv1", "--k", "2", "--images", "1")
    one_line_error(result, "not an introspect report", "--force")
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]
    result = invoke("report", folder, "--out", out, "--layers", "conv1", "--k", "2", "--images", "1", "--force",
                    "--json")
    assert result.exit_code == 0, result.output
    assert (out / "index.html").is_file() and not (out / "thesis.tex").exists()
    aside = tmp_path / json.loads(result.stdout)["moved_aside"]
    assert aside.parent == tmp_path and aside.name.startswith("mine.replaced-")
    assert (aside / "thesis.tex").read_text() == "precious"          # moved aside, never deleted
    assert leftovers(tmp_path) == []


def test_out_holding_another_commands_output_is_replaced_only_with_force(tmp_path):
    folder = copy_images(tmp_path, 2)
    out = tmp_path / "top"
    assert invoke("filters", "--data", folder, "--out", out).exit_code == 0
    result = invoke("report", folder, "--out", out, "--layers", "conv1", "--k", "2", "--images", "1")
    one_line_error(result, "filters`", "not a report", "--force")
    assert (out / "filters.png").is_file()
    result = invoke("report", folder, "--out", out, "--layers", "conv1", "--k", "2", "--images", "1", "--force")
    assert result.exit_code == 0, result.output
    assert (out / "index.html").is_file() and not (out / "filters.png").exists()


@pytest.mark.parametrize("layer, words", [("fc6", ["fc6", "not feature maps"]),
                                          ("conv9", ["unknown layer 'conv9'"])])
def test_a_layer_that_does_not_give_maps_is_one_line(tmp_path, layer, words):
    folder = copy_images(tmp_path, 2)
    result = invoke("report", folder, "--out", tmp_path / "site", "--layers", f"conv1,{layer}")
    one_line_error(result, *words)
    assert not (tmp_path / "site").exists() and leftovers(tmp_path) == []


def test_a_failing_rerun_keeps_the_previous_site(tmp_path):
    folder = copy_images(tmp_path, 2)
    out = tmp_path / "site"
    assert invoke("report", folder, "--out", out, "--layers", "conv1", "--k", "2", "--images", "1").exit_code == 0
    before = (out / "report.json").read_text()
    (folder / "zz_broken.png").write_bytes(b"nope")
    one_line_error(invoke("report", folder, "--out", out, "--layers", "conv1"), "zz_broken.png")
    assert (out / "report.json").read_text() == before and leftovers(tmp_path) == []
