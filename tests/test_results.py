"""One result protocol (to_dict, save(out) -> list[Path]) and one progress protocol
(progress(phase, done, total)) for every registered method; click bars only at the CLI edge."""
from __future__ import annotations

import ast
import inspect
import json
import typing
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner

import introspect
from introspect.cli import PhaseBars, emit_result
from introspect.core.results import Result, counted, output_folder, written
from introspect.output import OutputDir

ROOT = Path(__file__).resolve().parent.parent


def test_every_method_returns_a_result_and_takes_a_progress_callback_or_none():
    for name, method in introspect.methods().items():
        func = method.func
        returned = typing.get_type_hints(func)["return"]
        assert isinstance(returned, type), name
        assert callable(getattr(returned, "to_dict", None)), name
        save = inspect.signature(returned.save)
        assert list(save.parameters) == ["self", "out"], f"{name}: {returned.__name__}.save{save}"
        assert issubclass(returned, Result), name  # the runtime-checkable Protocol
        progress = inspect.signature(func).parameters.get("progress")
        if progress is not None:
            assert progress.default is None, name


def test_no_library_module_of_a_plugin_draws_click_bars():
    """click is for command modules (and a plugin's ``__init__`` registering them); methods report
    progress through their callback."""
    for path in sorted(ROOT.glob("plugins/introspect_*/*.py")):
        if path.name in ("__init__.py",) or path.name.startswith("command"):
            continue
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "click" not in names, path


def test_counted_turns_steps_into_phase_done_total():
    calls = []
    step = counted(lambda *a: calls.append(a), "occlude", 10)
    step(4)
    step(6)
    assert calls == [("occlude", 4, 10), ("occlude", 10, 10)]
    assert counted(None, "occlude", 10) is None


def test_phase_bars_draw_one_bar_per_phase(capsys):
    with PhaseBars(lambda phase: f"<{phase}>") as bars:
        bars("mine", 0, 3)
        bars("mine", 3, 3)
        bars("project", 2, 2)
    err = capsys.readouterr().err
    assert "<mine>" in err and "<project>" in err and bars.bar is None


class Tiny:
    """A minimal result following the protocol."""

    def __init__(self, value: float):
        self.value = value

    def to_dict(self) -> dict:
        return {"value": self.value}

    def save(self, out) -> list[Path]:
        with output_folder(out) as od:
            od.save_json("result.json", self.to_dict())
            od.save_text("sub/note.txt", "x")
        return written(od, ["result.json", "sub/note.txt"])


def test_save_into_a_folder_or_an_open_output_dir_gives_the_same_final_paths(tmp_path):
    direct = Tiny(1.5).save(tmp_path / "a")
    assert direct == [tmp_path / "a" / "result.json", tmp_path / "a" / "sub" / "note.txt"]
    assert all(p.is_file() for p in direct)
    with OutputDir(tmp_path / "b") as od:
        staged = Tiny(1.5).save(od)
        assert not (tmp_path / "b" / "result.json").exists()  # not before the folder is committed
    assert staged == [tmp_path / "b" / "result.json", tmp_path / "b" / "sub" / "note.txt"]
    assert all(p.is_file() for p in staged) and isinstance(Tiny(0), Result)


def test_emit_result_prints_the_summary_with_out_and_files(tmp_path):
    @click.command()
    @click.option("--json", "as_json", is_flag=True)
    def cmd(as_json):
        emit_result(Tiny(2.0), tmp_path / "o", as_json, lambda s: [f"value {s['value']}"], extra={"k": 1})

    doc = json.loads(CliRunner().invoke(cmd, ["--json"]).output)
    assert doc == {"value": 2.0, "k": 1, "out": str(tmp_path / "o"), "files": ["result.json", "sub/note.txt"]}
    text = CliRunner().invoke(cmd, []).output
    assert text.splitlines() == ["value 2.0", f"wrote 2 files to {tmp_path / 'o'}"]
    assert json.loads((tmp_path / "o" / "result.json").read_text()) == {"value": 2.0}


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


@pytest.mark.parametrize("method, args, phase, expected", [
    ("occlusion", dict(size=4, stride=4), "occlude", 16),
    ("invariance", dict(transform="rotate", values=[0, 10, 20], layers=["conv"], batch_size=2), "transform", 2),
])
def test_methods_report_phase_done_total_up_to_the_total(method, args, phase, expected):
    calls = []
    x = torch.randn(1, 3, 16, 16)
    getattr(introspect, method)(Net().eval(), x, **args, progress=lambda *a: calls.append(a))
    assert calls and all(c[0] == phase for c in calls)
    done = [c[1] for c in calls]
    assert done == sorted(done) and done[-1] == calls[-1][2] == calls[0][2] == expected
