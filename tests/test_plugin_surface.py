"""The plugin contract: plugins import only ``introspect.plugin``, public ``introspect`` names and
their own modules; every module the surface draws from declares ``__all__``."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import introspect
import introspect.plugin as surface

ROOT = Path(__file__).resolve().parent.parent
#: the bundled plugins and the example third-party plugin
PACKAGES = sorted(ROOT.glob("plugins/introspect_*")) + [ROOT / "examples" / "introspect-guided" / "introspect_guided"]


def imports_outside_surface(path: Path, own: str) -> list[str]:
    """Every import in ``path`` that is neither the surface, public ``introspect``, the plugin's own
    package ``own``, nor outside introspect altogether (torch, numpy, ...)."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if alias.name.startswith("introspect") and top != own:
                    bad.append(f"{path.name}:{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            top = module.split(".")[0]
            if node.level or top == own or not top.startswith("introspect"):
                continue
            names = [a.name for a in node.names]
            if module == "introspect.plugin":
                allowed = set(surface.__all__)
            elif module == "introspect":
                allowed = set(introspect.__all__)
            else:
                allowed = set()
            for name in names:
                if name not in allowed or name.startswith("_"):
                    bad.append(f"{path.name}:{node.lineno}: from {module} import {name}")
    return bad


def test_bundled_plugins_import_only_the_surface():
    found = {}
    assert len(PACKAGES) > 8
    for package in PACKAGES:
        for path in sorted(package.rglob("*.py")):
            bad = imports_outside_surface(path, package.name)
            if bad:
                found[package.name] = found.get(package.name, []) + bad
    assert found == {}


def test_the_walker_catches_each_kind_of_bad_import(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text(
        "import torch\nfrom introspect.plugin import attach\nfrom introspect import hookimpl\n"
        "from introspect_mine.x import y\nfrom . import z\n"            # all fine
        "from introspect.core.layers import resolve_layer\n"             # 6: core module
        "from introspect_deconv.top import top_k\n"                      # 7: another plugin
        "import introspect.render\n"                                     # 8: a module of introspect
        "from introspect import render\n"                                # 9: not a public name
        "from introspect.plugin import _SOURCES\n"                       # 10: not on the surface
    )
    bad = imports_outside_surface(source, "introspect_mine")
    assert [b.split(":")[1] for b in bad] == ["6", "7", "8", "9", "10"]


def test_every_surface_name_resolves_and_its_module_declares_all():
    for name in surface.__all__:
        module, original = surface._SOURCES[name]
        loaded = importlib.import_module(module)
        assert original in loaded.__all__, f"{module} does not list {original} in __all__"
        assert getattr(surface, name) is getattr(loaded, original)
    assert set(surface.__all__) <= set(dir(surface))


def test_an_unknown_surface_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        surface.nothing  # noqa: B018


def declared_for_type_checkers(source: str) -> dict[str, tuple[str, str]]:
    """name -> (module, name there) of every ``from X import Y as Z`` in the ``if TYPE_CHECKING:``
    blocks of ``source``."""
    declared = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom):
                    for alias in statement.names:
                        declared[alias.asname or alias.name] = (statement.module or "", alias.name)
    return declared


def test_the_surface_is_declared_for_type_checkers_as_it_is_loaded():
    source = Path(surface.__file__).read_text()
    assert declared_for_type_checkers(source) == surface._SOURCES
    assert sorted(declared_for_type_checkers(source)) == surface.__all__
    # the check can fail: a name left out, or one drawn from another module
    first = next(line for line in source.splitlines() if line.startswith("    from introspect.core.attach import"))
    assert declared_for_type_checkers(source.replace(first + "\n", "")) != surface._SOURCES
    moved = source.replace(first, first.replace("introspect.core.attach", "introspect.core.layers"))
    assert declared_for_type_checkers(moved) != surface._SOURCES


def test_plugin_packages_have_one_style_of_init():
    """Every bundled plugin's ``__init__``: hook implementations, methods registered by
    ``"package.module:function"``, re-exported names loaded by ``lazy_exports`` and declared for type
    checkers (the same names), no hand-written ``__getattr__``, no module named like a function."""
    checked = 0
    for package in sorted(ROOT.glob("plugins/introspect_*")):
        if package.name == "introspect_timm":  # an architecture provider in one module (no method)
            continue
        source = (package / "__init__.py").read_text()
        tree = ast.parse(source)
        assert not [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "__getattr__"], package.name
        paths = [call.args[1].value for call in ast.walk(tree) if isinstance(call, ast.Call)
                 and getattr(call.func, "id", None) == "register" and isinstance(call.args[1], ast.Constant)]
        assert paths and all(":" in p and "." in p.split(":")[0] for p in paths), (package.name, paths)
        loaded = importlib.import_module(package.name)
        lazy = dict(getattr(loaded, "_lazy_names", {}))
        declared = declared_for_type_checkers(source)
        assert {name: module for name, (module, _) in declared.items()} == lazy, package.name
        assert set(lazy) <= set(loaded.__all__), package.name
        assert not [n for n in lazy if (package / f"{n}.py").exists()], package.name
        checked += 1
    assert checked >= 10
