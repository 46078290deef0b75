"""What every analysis method returns and how it reports progress.

A **result** holds tensors and metadata and knows nothing of files until asked: ``to_dict()`` is its
JSON-ready summary (what ``--json`` prints) and ``save(out)`` writes its pictures, arrays and
``result.json`` into folder ``out`` and returns the paths written. The CLI saves and prints any
method's result through these two calls.

**Progress** is one callable type, ``progress(phase, done, total)``: ``phase`` names the stage (a
string), ``done`` of ``total`` units are finished. Methods take ``progress=None`` and call it as they
go; the command line turns the calls into click bars at its edge (:class:`introspect.cli.PhaseBars`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Protocol, Union, runtime_checkable

#: ``progress(phase, done, total)``: ``done`` of ``total`` units of stage ``phase`` are finished.
Progress = Callable[[str, int, int], None]


@runtime_checkable
class Result(Protocol):
    """The protocol of every method's result (a dataclass of tensors and metadata)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: numbers, names and shapes, no tensors."""
        ...

    def save(self, out: Union[str, "os.PathLike[str]"]) -> list[Path]:
        """Write the result's pictures (PNG), arrays (``.npy``) and ``result.json`` into folder ``out``
        (created if needed; nothing is left half-written on error) and return the paths written."""
        ...


def report(progress: Progress | None, phase: str, done: int, total: int) -> None:
    """Call ``progress(phase, done, total)`` when a callback is given."""
    if progress is not None:
        progress(phase, done, total)


__all__ = ["Progress", "Result", "report"]
