"""Start-up: the help of the group and of every command, ``--version`` and ``plugins`` import no torch
(nor torchvision, captum, timm); methods registered by import path and lazily exported names load on
first use and are the real functions."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from introspect import hookimpl
from introspect.manager import get_plugin_manager

HEAVY = ("torch", "torchvision", "captum", "timm")

#: Commands of the bundled plugins and the core (the check must not pass on an empty command list).
BUNDLED_COMMANDS = {"attribute", "correspondence", "deconv", "evolution", "filters", "generalization", "invariance",
                    "layers", "models", "occlusion", "plugins", "report", "top", "train"}


def run_python(code: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "INTROSPECT_DISABLE_PLUGINS"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


HELP_EVERYTHING = """
    import json, sys
    from click.testing import CliRunner
    from introspect.cli import build_cli

    cli = build_cli()
    runner = CliRunner()
    calls = [["--help"], ["--version"], ["plugins"], ["plugins", "--json"]]
    calls += [[name, "--help"] for name in sorted(cli.commands)]
    outputs = {{}}
    for args in calls:
        result = runner.invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, (args, result.output)
        outputs[" ".join(args)] = result.output
    heavy = sorted(m for m in {heavy} if m in sys.modules)
    print(json.dumps({{"commands": sorted(cli.commands), "heavy": heavy, "outputs": outputs}}))
"""


def test_help_version_and_plugins_import_no_torch():
    found = run_python(HELP_EVERYTHING.format(heavy=HEAVY))
    assert BUNDLED_COMMANDS <= set(found["commands"])
    assert found["heavy"] == []
    outputs = found["outputs"]
    assert all(f"  {name} " in outputs["--help"] for name in BUNDLED_COMMANDS)
    assert "--fill [gray|mean|zero|blur]" in outputs["occlusion --help"]  # option choices, without torch
    assert "[max|map]" in outputs["deconv --help"] and "[softmax|svm]" in outputs["generalization --help"]
    assert "0.1.0" in outputs["--version"]
    rows = {row["name"]: row for row in json.loads(outputs["plugins --json"])}
    assert rows["occlusion"]["registers"] == {"commands": ["occlusion"], "methods": ["occlusion"]}
    assert rows["deconv"]["registers"]["methods"] == ["project", "top_k"]
    assert rows["builtin_models"]["registers"]["architectures"] == [
        "zfnet", "alexnet", "alexnet_torchvision", "torchvision classification models"]
    assert not [r for r in rows.values() if r["error"]]


def test_the_check_sees_torch_once_a_method_is_used():
    """The same check fails when torch is imported: using a method loads it (and the real function)."""
    found = run_python(f"""
        import inspect, json, sys
        import introspect
        before = sorted(m for m in {HEAVY} if m in sys.modules)
        func = introspect.methods()["occlusion"].func
        print(json.dumps({{"before": before, "torch": "torch" in sys.modules, "module": func.__module__,
                           "is_function": inspect.isfunction(func)}}))
    """)
    assert found == {"before": [], "torch": True, "module": "introspect_occlusion.method", "is_function": True}


def test_lazy_names_stay_functions_when_their_modules_are_imported_first():
    """``introspect.models.zfnet`` and ``introspect.core.attach`` are functions named like their
    modules: importing the module first must not replace the function (nor the plugin's modules its
    lazily exported functions)."""
    found = run_python("""
        import inspect, json
        import introspect.core.attach, introspect.models.zfnet, introspect_deconv.projection, introspect_deconv.top
        from introspect.core import attach
        from introspect.models import zfnet
        from introspect_deconv import project, top_k
        import introspect, introspect.core, introspect.models, introspect_deconv
        names = {"attach": attach, "zfnet": zfnet, "project": project, "top_k": top_k,
                 "introspect.attach": introspect.attach, "core.attach": introspect.core.attach,
                 "models.zfnet": introspect.models.zfnet, "deconv.project": introspect_deconv.project}
        print(json.dumps({name: [inspect.isfunction(f), f.__module__] for name, f in names.items()}))
    """)
    assert found == {
        "attach": [True, "introspect.core.attach"], "zfnet": [True, "introspect.models.zfnet"],
        "project": [True, "introspect_deconv.projection"], "top_k": [True, "introspect_deconv.top"],
        "introspect.attach": [True, "introspect.core.attach"], "core.attach": [True, "introspect.core.attach"],
        "models.zfnet": [True, "introspect.models.zfnet"], "deconv.project": [True, "introspect_deconv.projection"],
    }


def test_method_registered_by_import_path_loads_on_first_use():
    import introspect

    class Plugin:
        @hookimpl
        def register_methods(self, register):
            register("path_method", "json:dumps", "a method registered by import path")

    pm = get_plugin_manager()
    plugin = Plugin()
    pm.register(plugin, name="path-plugin")
    try:
        method = introspect.methods()["path_method"]
        assert (method.description, method.plugin) == ("a method registered by import path", "path-plugin")
        assert method.func is json.dumps
        assert introspect.path_method([1, 2]) == "[1, 2]"
    finally:
        pm.unregister(plugin)
    assert "path_method" not in introspect.methods()


@pytest.mark.parametrize("path, description", [("json.dumps", "no colon"), ("json:dumps", "")])
def test_import_path_needs_module_name_and_description(path, description):
    import introspect

    class Plugin:
        @hookimpl
        def register_methods(self, register):
            register("path_method", path, description)

    pm = get_plugin_manager()
    plugin = Plugin()
    pm.register(plugin, name="bad-path-plugin")
    try:
        assert "path_method" not in introspect.methods()
        error = pm.infos["bad-path-plugin"].error
        assert "register_methods failed: ValueError" in error and "'module:name'" in error
    finally:
        pm.unregister(plugin)
        pm.infos.pop("bad-path-plugin", None)
