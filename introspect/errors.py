"""Errors a user can act on.

Every error that reaches a user is an :class:`IntrospectError`: one line that names the problem and
the fix. The CLI prints it without a traceback and exits non-zero.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class IntrospectError(ValueError):
    """A problem with the user's input, stated in one line with its fix."""


def closest(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """Return a ``" (did you mean 'a', 'b'?)"`` suffix for ``name``, or ``""`` if nothing is close."""
    matches = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)
    if not matches:
        return ""
    return " (did you mean " + ", ".join(repr(m) for m in matches) + "?)"


__all__ = [
    "IntrospectError", "closest"
]
