"""The public API is explicit: bundled methods declared for type checkers, ``dir()`` lists methods,
a plugin method cannot shadow a core name, the package ships ``py.typed``, and one name means one
thing (``introspect.load_image`` vs ``introspect.images.preprocess_image``)."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import tomllib
import torch
from click.testing import CliRunner

import introspect
from introspect import hookimpl
from introspect.cli import build_cli
from introspect.manager import core_names, get_plugin_manager

ROOT = Path(__file__).resolve().parent.parent


def declared_for_type_checkers() -> dict[str, str]:
    """``name -> module`` of the imports inside ``if TYPE_CHECKING:`` in ``introspect/__init__.py``."""
    tree = ast.parse((ROOT / "introspect" / "__init__.py").read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", None) == "TYPE_CHECKING")
    return {a.asname or a.name: node.module for node in block.body for a in node.names}


def test_every_bundled_method_is_declared_for_type_checkers_as_the_function_registered():
    bundled = {name: m for name, m in introspect.methods().items()
               if get_plugin_manager().infos.get(m.plugin) is None or get_plugin_manager().infos[m.plugin].bundled}
    declared = declared_for_type_checkers()
    assert set(declared) == set(bundled)
    for name, module in declared.items():
        func = bundled[name].func
        assert getattr(func, "__wrapped__", func).__module__ == module, name
        assert getattr(introspect, name) is func


def test_dir_lists_methods_and_core_names():
    names = dir(introspect)
    assert {"project", "top_k", "occlusion", "feature_evolution", "load_model", "attach"} <= set(names)
    assert names == sorted(names)


def test_a_method_named_like_a_core_name_is_refused_in_one_line(tmp_path, monkeypatch):
    class Clash:
        @hookimpl
        def register_methods(self, register):
            register("load_model", lambda model, images: None, "shadows the core")

    pm = get_plugin_manager()
    plugin = Clash()
    pm.register(plugin, name="clash-plugin")
    try:
        assert "load_model" not in introspect.methods()
        assert introspect.load_model.__module__ == "introspect.models.load"
        result = CliRunner().invoke(build_cli(), ["plugins", "--json"])
        rows = {r["name"]: r for r in json.loads(result.output)}
        error = rows["clash-plugin"]["error"]
        assert "clashes with introspect.load_model" in error and "\n" not in error
    finally:
        pm.unregister(plugin)
        pm.infos.pop("clash-plugin", None)
    after = json.loads(CliRunner().invoke(build_cli(), ["plugins", "--json"]).output)
    assert "clash-plugin" not in {r["name"] for r in after}


def test_core_names_cover_the_api_and_the_submodules():
    names = core_names()
    assert {"load_model", "attach", "images", "models", "plugin", "core"} <= names
    assert not names & set(introspect.methods())


def test_py_typed_is_shipped():
    assert (ROOT / "introspect" / "py.typed").is_file()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["introspect"]


def test_load_image_with_a_model_is_preprocess_image_with_its_preprocessing(tmp_path):
    from PIL import Image

    from introspect import images
    from introspect.models import zfnet

    Image.new("RGB", (40, 30), (200, 100, 50)).save(tmp_path / "a.png")
    model = zfnet(widths=(4, 6, 6, 6, 4))
    pre = images.Preprocess.from_meta(introspect.meta_of(model))
    torch.testing.assert_close(introspect.load_image(tmp_path / "a.png", model),
                               images.preprocess_image(tmp_path / "a.png", pre), rtol=0, atol=0)
    assert not hasattr(images, "load_image")


@pytest.mark.parametrize("name", ["project", "occlusion"])
def test_methods_are_found_by_attribute_as_before(name):
    assert getattr(introspect, name) is introspect.methods()[name].func
