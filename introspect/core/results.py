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

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

#: ``progress(phase, done, total)``: ``done`` of ``total`` units of stage ``phase`` are finished.
Progress = Callable[[str, int, int], None]


@runtime_checkable
class Result(Protocol):
    """The protocol of every method's result (a dataclass of tensors and metadata)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: numbers, names and shapes, no tensors."""
        ...

    def save(self, out: str | os.PathLike[str] | Any) -> list[Path]:
        """Write the result's pictures (PNG), arrays (``.npy``) and ``result.json`` into folder ``out``
        (created if needed; nothing is left half-written on error) and return the paths written.
        ``out`` may also be an open :class:`introspect.output.OutputDir` (a command opens it before
        the long work, so a bad ``--out`` fails at once); the paths are then where the files land
        when it closes."""
        ...


def counted(progress: Progress | None, phase: str, total: int) -> Callable[[int], None] | None:
    """A callback for loops that count in steps (``step(n)``: ``n`` more units done) reporting
    ``progress(phase, done, total)``; None when ``progress`` is None."""
    if progress is None:
        return None
    done = 0

    def step(count: int) -> None:
        nonlocal done
        done += int(count)
        progress(phase, done, total)

    return step


@contextlib.contextmanager
def output_folder(out: Any) -> Iterator[Any]:
    """``out`` as an open :class:`~introspect.output.OutputDir`: the one given (its owner commits it),
    or a new one for folder ``out``, committed when the block ends (nothing written on error)."""
    from introspect.output import OutputDir

    if isinstance(out, OutputDir):
        yield out
    else:
        with OutputDir(out) as od:
            yield od


def written(od: Any, names: Sequence[str]) -> list[Path]:
    """The final paths of files ``names`` (relative) written into ``od``, sorted."""
    return sorted(od.out / name for name in names)


def report(progress: Progress | None, phase: str, done: int, total: int) -> None:
    """Call ``progress(phase, done, total)`` when a callback is given."""
    if progress is not None:
        progress(phase, done, total)


__all__ = ["Progress", "Result", "report", "counted", "output_folder", "written"]
