"""One signature convention for every registered method (captum's shape): the model first, the
inputs second, everything else keyword-only, one name for one concept."""
from __future__ import annotations

import inspect

import pytest

import introspect

#: documented exceptions to "the model first"
FIRST = {"feature_evolution": "checkpoints"}
#: documented exceptions to "everything else keyword-only": captum's method name may come third, as
#: ``introspect.attribute(model, images, "saliency")`` (keyword ``method=`` works too)
THIRD = {"attribute": "method"}
#: names that mean a concept another name already has
SYNONYMS = {"image": "images", "inputs": "images", "x": "images", "train_set": "dataset", "data": "dataset",
            "test_set": "test_dataset", "top_maps": "maps", "n_maps": "maps", "layer_names": "layers",
            "topk": "k", "show_progress": "progress"}


def convention_problems(name: str, func) -> list[str]:
    params = list(inspect.signature(func).parameters.values())
    problems = []
    if len(params) < 2:
        return [f"{name} takes fewer than two arguments"]
    first, second, rest = params[0], params[1], params[2:]
    if first.name != FIRST.get(name, "model"):
        problems.append(f"{name}: first argument {first.name!r}, expected {FIRST.get(name, 'model')!r}")
    if second.name not in ("images", "dataset"):
        problems.append(f"{name}: second argument {second.name!r}, expected 'images' or 'dataset'")
    for p in (first, second):
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            problems.append(f"{name}: {p.name!r} must be positional")
    for i, p in enumerate(rest):
        if i == 0 and p.name == THIRD.get(name) and p.kind == p.POSITIONAL_OR_KEYWORD:
            continue
        if p.kind not in (p.KEYWORD_ONLY, p.VAR_KEYWORD):
            problems.append(f"{name}: {p.name!r} must be keyword-only")
        if p.name in SYNONYMS:
            problems.append(f"{name}: {p.name!r} should be called {SYNONYMS[p.name]!r}")
    names = {p.name for p in params}
    if {"layer", "layers"} <= names:
        problems.append(f"{name}: both 'layer' and 'layers'")
    if "progress" in names and inspect.signature(func).parameters["progress"].default is not None:
        problems.append(f"{name}: progress must default to None")
    return problems


def test_every_registered_method_follows_the_convention():
    methods = introspect.methods()
    assert len(methods) >= 8
    problems = [p for name, m in methods.items() for p in convention_problems(name, m.func)]
    assert problems == []


@pytest.mark.parametrize("source, expected", [
    ("def m(model, images, *, layers=None): ...", []),
    ("def m(model, image, *, layers=None): ...", ["m: second argument 'image', expected 'images' or 'dataset'"]),
    ("def m(model, images, layer=None): ...", ["m: 'layer' must be keyword-only"]),
    ("def m(model, dataset, *, top_maps=9): ...", ["m: 'top_maps' should be called 'maps'"]),
    ("def m(net, dataset, *, layer=None, layers=None): ...",
     ["m: first argument 'net', expected 'model'", "m: both 'layer' and 'layers'"]),
])
def test_the_check_catches_each_kind_of_departure(source, expected):
    space: dict = {}
    exec(source, space)
    assert convention_problems("m", space["m"]) == expected


def test_methods_that_take_layers_accept_one_name_or_a_list():
    hints = {name: inspect.signature(m.func).parameters.get("layers") for name, m in introspect.methods().items()}
    for name, param in hints.items():
        if param is not None:
            annotation = str(param.annotation)
            assert "str" in annotation and "Sequence" in annotation, (name, annotation)
