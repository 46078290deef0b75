"""The plugin system: bundled plugins through entry points, a pip-installed third-party plugin,
broken plugins reported and skipped, the disabling variable, in-process registration."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import introspect
from conftest import invoke
from introspect import hookimpl
from introspect.manager import get_plugin_manager

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, pythonpath=None, env_extra=None):
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", "from introspect.cli import main; main()", *args],
                          capture_output=True, text=True, env=env, timeout=300)


def fake_distribution(site: Path, name: str, module_source: str, hooks: str = "") -> None:
    """Install a one-module distribution with an ``introspect`` entry point into ``site``."""
    (site / f"{name}.py").write_text(textwrap.dedent(module_source))
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[introspect]\n{name} = {name}\n")


@pytest.fixture(scope="module")
def guided_site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(ROOT / "examples" / "introspect-guided")], check=True, timeout=300)
    return site


def test_bundled_plugins_load_through_entry_points():
    result = run_cli("plugins", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    for name in ("builtin_models", "deconv", "occlusion", "correspondence", "train"):
        assert rows[name]["distribution"] == "introspect" and rows[name]["error"] is None
    assert "zfnet" in rows["builtin_models"]["registers"]["architectures"]


def test_third_party_plugin_is_discovered_and_its_command_runs(guided_site, tmp_path):
    rows = {r["name"]: r for r in json.loads(run_cli("plugins", "--json", pythonpath=guided_site).stdout)}
    assert rows["guided"]["distribution"] == "introspect-guided" and rows["guided"]["error"] is None
    assert rows["guided"]["registers"] == {"commands": ["guided"], "methods": ["guided_backprop"]}
    image = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype("uint8")).save(image)
    out = tmp_path / "out"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=5).state_dict(), tmp_path / "r18.pth")
    result = run_cli("guided", str(tmp_path / "r18.pth"), str(image), "--arch", "resnet18", "--device", "cpu",
                     "--out", str(out), "--json", pythonpath=guided_site)
    assert result.returncode == 0, result.stderr
    maps = np.load(out / "guided.npy")
    x = np.load(out / "input.npy")
    assert maps.shape == x.shape and np.abs(maps).sum() > 0
    assert (out / "guided.png").stat().st_size > 0


def test_disable_variable_skips_third_party(guided_site):
    result = run_cli("plugins", "--json", pythonpath=guided_site, env_extra={"INTROSPECT_DISABLE_PLUGINS": "1"})
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["guided"]["error"].startswith("disabled") and rows["deconv"]["error"] is None
    assert "guided" not in run_cli("--help", pythonpath=guided_site,
                                   env_extra={"INTROSPECT_DISABLE_PLUGINS": "1"}).stdout


@pytest.mark.parametrize("source,expected", [
    ("raise ImportError('needs libfoo')\n", "ImportError: needs libfoo"),
    ("from introspect import hookimpl\n@hookimpl\ndef register_method(register):\n    pass\n", "unknown hook"),
    ("from introspect import hookimpl\n@hookimpl\ndef register_commands(cli):\n    raise RuntimeError('boom')\n",
     "register_commands failed: RuntimeError: boom"),
])
def test_broken_plugin_is_reported_and_skipped(tmp_path, monkeypatch, capsys, source, expected):
    """In-process, with the distribution on ``sys.path`` as pip puts it and the plugin manager built
    afresh for the test (the process's own manager is put back afterwards)."""
    import introspect.manager as manager

    fake_distribution(tmp_path, "badplugin", source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(manager, "_MANAGER", None)
    monkeypatch.delitem(sys.modules, "badplugin", raising=False)
    try:
        result = invoke("plugins", "--json")
        stderr = capsys.readouterr().err + result.stderr
        assert result.exit_code == 0 and result.exception is None, result.output
        rows = {r["name"]: r for r in json.loads(result.stdout)}
        assert expected.lower() in rows["badplugin"]["error"].lower()
        assert rows["deconv"]["error"] is None
        warning = [line for line in stderr.splitlines() if "badplugin" in line]
        assert len(warning) == 1 and "Traceback" not in stderr
        models = invoke("models")
        assert models.exit_code == 0 and models.exception is None and "zfnet" in models.stdout
    finally:
        sys.modules.pop("badplugin", None)


def test_register_and_unregister_in_process():
    class Plugin:
        @hookimpl
        def register_methods(self, register):
            register("mean_activation", lambda model, x: model(x).mean(), "mean output")

    pm = get_plugin_manager()
    plugin = Plugin()
    pm.register(plugin, name="test-plugin")
    try:
        assert "mean_activation" in introspect.methods()
        model = torch.nn.Linear(3, 2)
        assert introspect.mean_activation(model, torch.ones(1, 3)).shape == ()
    finally:
        pm.unregister(plugin)
    assert "mean_activation" not in introspect.methods()
    with pytest.raises(AttributeError):
        _ = introspect.mean_activation
