"""Words that go stale when the code moves: the package docstring's list of bundled methods, and the
pytest markers the suite declares against those it uses."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import tomllib

import introspect

ROOT = Path(__file__).resolve().parent.parent
#: pytest's own markers, which need no declaration
BUILTIN_MARKERS = {"parametrize", "skip", "skipif", "xfail", "usefixtures", "filterwarnings"}


def test_the_package_docstring_and_type_declarations_name_every_bundled_method():
    bundled = {name for name, method in introspect.methods().items()
               if method.plugin in {"deconv", "occlusion", "attribute", "correspondence", "train", "evolution",
                                    "invariance", "filters", "generalization", "report"}}
    assert len(bundled) >= 11
    listed = set(re.findall(r"^\* (.*?):", introspect.__doc__, flags=re.M))
    named = {n.strip("` ") for line in listed for n in line.split(",")}
    assert named == bundled
    tree = ast.parse((ROOT / "introspect" / "__init__.py").read_text())
    declared = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.If)
                and getattr(node.test, "id", None) == "TYPE_CHECKING" for statement in node.body
                if isinstance(statement, ast.ImportFrom) and (statement.module or "").startswith(("introspect_",
                                                                                                   "introspect.training"))
                for alias in statement.names}
    assert declared == bundled


def test_markers_declared_are_the_markers_used():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = {m.split(":")[0].strip() for m in config["tool"]["pytest"]["ini_options"]["markers"]}
    used = set()
    for path in sorted((ROOT / "tests").glob("*.py")):
        used |= set(re.findall(r"pytest\.mark\.(\w+)", path.read_text()))
    assert used - BUILTIN_MARKERS == declared
