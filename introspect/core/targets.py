"""Target classes by index or by name: the one resolver behind every ``--target`` / ``targets=``.

A target is a class index (``281``, ``"281"``) or a class name of the model (``"tabby"``): matched
exactly, then case-insensitively, then as a unique case-insensitive prefix (``"tab"``), then as a
unique case-insensitive word inside a name (``"tabby"`` in ``"tabby cat"``). Anything ambiguous or
unknown is one line that lists the close names with their indices.
"""
from __future__ import annotations

import difflib
import numbers
from collections.abc import Sequence

from introspect.errors import IntrospectError

_SHOWN = 8


def _listing(indices: Sequence[int], names: Sequence[str]) -> str:
    shown = ", ".join(f"{names[i]!r} ({i})" for i in indices[:_SHOWN])
    return shown + (f" and {len(indices) - _SHOWN} more" if len(indices) > _SHOWN else "")


def resolve_target(target, classes: Sequence[str] | None, num_classes: int) -> int:
    """The class index of ``target``.

    Args:
        target (int | str): a class index (numpy integers and digit strings too) or a class name,
            exact, case-insensitive or a unique prefix.
        classes (sequence of str | None): the model's class names (index = output unit), or None.
        num_classes (int): the number of model outputs.

    Returns:
        int: the index, ``0 <= index < num_classes``.

    Raises:
        IntrospectError: not a class, out of range, ambiguous (two classes share the name or the
            prefix) or unknown; the line lists the close names with their indices.

    Example:
        >>> resolve_target("Tab", ["tabby", "tiger cat"], 2)
        0
    """
    if isinstance(target, numbers.Integral) and not isinstance(target, bool):
        target = int(target)
    if isinstance(target, bool) or not isinstance(target, (int, str)):
        raise IntrospectError(f"target {target!r} is not a class; give a class index or name")
    if isinstance(target, str) and target.strip().lstrip("-").isdigit():
        target = int(target.strip())
    if isinstance(target, int):
        if not 0 <= target < num_classes:
            raise IntrospectError(f"target class {target} is out of range; the model has {num_classes} classes "
                                  f"(0..{num_classes - 1})")
        return target
    names = [str(c) for c in (classes or [])]
    if not names:
        raise IntrospectError(f"target {target!r}: the model has no class names; give a class index "
                              f"(0..{num_classes - 1})")
    text = target.strip()
    key = text.casefold()
    folded = [n.casefold() for n in names]
    for found in ([i for i, n in enumerate(names) if n == text],
                  [i for i, n in enumerate(folded) if n == key],
                  [i for i, n in enumerate(folded) if n.startswith(key)],
                  [i for i, n in enumerate(folded) if key in n.replace(",", " ").split() or f" {key}" in f" {n}"]):
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise IntrospectError(f"target {target!r} is ambiguous: {_listing(found, names)}; "
                                  "give the full name or the class index")
    close = difflib.get_close_matches(key, folded, n=_SHOWN, cutoff=0.6)
    hint = f" (did you mean {_listing([folded.index(c) for c in close], names)}?)" if close else ""
    raise IntrospectError(f"unknown target class {target!r}{hint}; give a class index or one of the model's "
                          "class names")


def resolve_targets(targets, classes: Sequence[str] | None, num_classes: int, default: int | None = None) -> list[int]:
    """:func:`resolve_target` for one target or a sequence; ``None`` or ``[]`` -> ``[default]``
    (or ``[]`` when no default is given)."""
    if targets is None or (isinstance(targets, (list, tuple)) and not targets):
        return [] if default is None else [int(default)]
    if isinstance(targets, (numbers.Integral, str)):
        targets = [targets]
    return [resolve_target(t, classes, num_classes) for t in targets]


__all__ = ["resolve_target", "resolve_targets"]
