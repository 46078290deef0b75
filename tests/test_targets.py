"""The one target resolver (``--target`` of every command, ``targets=`` of every method)."""
from __future__ import annotations

import pytest
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

from introspect.core import resolve_target, resolve_targets
from introspect.errors import IntrospectError

IMAGENET = list(torchvision.models.ResNet50_Weights.DEFAULT.meta["categories"])


def brute_force(target: str, names: list[str]) -> list[int]:
    """The candidates of the first rule that matches anything (exact, folded, folded prefix)."""
    for rule in (lambda n: n == target, lambda n: n.casefold() == target.casefold(),
                 lambda n: n.casefold().startswith(target.casefold())):
        found = [i for i, n in enumerate(names) if rule(n)]
        if found:
            return found
    return []


@settings(max_examples=200, deadline=None)
@given(names=st.lists(st.text(alphabet="abcAB -", min_size=1, max_size=6), min_size=1, max_size=8),
       pick=st.integers(min_value=0, max_value=7), cut=st.integers(min_value=1, max_value=6))
def test_names_and_prefixes_against_brute_force(names, pick, cut):
    target = names[pick % len(names)][:cut]
    if not target.strip() or target.strip().lstrip("-").isdigit():
        return
    expected = brute_force(target.strip(), names)
    if len(expected) == 1:
        assert resolve_target(target, names, len(names)) == expected[0]
    elif len(expected) > 1:
        with pytest.raises(IntrospectError, match="ambiguous"):
            resolve_target(target, names, len(names))


def test_imagenet_names():
    n = len(IMAGENET)
    assert resolve_target("tabby", IMAGENET, n) == 281
    assert resolve_target("TIGER CAT", IMAGENET, n) == 282
    assert resolve_target("Granny", IMAGENET, n) == IMAGENET.index("Granny Smith")
    assert resolve_target("281", IMAGENET, n) == 281 and resolve_target(7, IMAGENET, n) == 7
    with pytest.raises(IntrospectError, match=r"ambiguous: 'tabby' \(281\), 'table lamp' \(846\)"):
        resolve_target("tab", IMAGENET, n)
    with pytest.raises(IntrospectError, match=r"unknown target class 'tabbby' \(did you mean 'tabby' \(281\)"):
        resolve_target("tabbby", IMAGENET, n)
    with pytest.raises(IntrospectError, match="out of range"):
        resolve_target(1000, IMAGENET, n)
    with pytest.raises(IntrospectError, match="no class names"):
        resolve_target("cat", None, 10)
    with pytest.raises(IntrospectError, match="not a class"):
        resolve_target(True, IMAGENET, n)


def test_duplicate_names_are_ambiguous_with_their_indices():
    names = ["crane", "dog", "crane"]
    with pytest.raises(IntrospectError, match=r"'crane' \(0\), 'crane' \(2\)"):
        resolve_target("crane", names, 3)
    assert resolve_targets(["dog", 0], names, 3) == [1, 0]
    assert resolve_targets(None, names, 3, default=2) == [2] and resolve_targets([], names, 3) == []


def test_every_method_uses_the_shared_resolver():
    """Occlusion and invariance resolve names the same way (a prefix works in both)."""
    from introspect_invariance.method import image_targets
    from introspect_occlusion.method import resolve_targets as occlusion_targets

    assert occlusion_targets(["Granny"], IMAGENET, 1000, 0) == [IMAGENET.index("Granny Smith")]
    assert image_targets(["Granny"], 1, IMAGENET, 1000) == [IMAGENET.index("Granny Smith")]
