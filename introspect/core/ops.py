"""Convolution and pooling geometry in one place: one ``pair``, one padding decoder.

Every part of the core that reads a sliding window's arguments (receptive fields in
:mod:`introspect.core.layers`, the deconvnet chain in :mod:`introspect.core.chain`, incremental
inference in :mod:`introspect.core.incremental`) decodes them here, so they cannot disagree -- in
particular on ``padding="same"`` with an odd total padding, where PyTorch pads one pixel more after
than before.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Pair = tuple[int, int]


def pair(value: Any) -> Pair:
    """``(h, w)`` of an int or a sequence (its first and last entries; ``(1, 1)`` for an empty one)."""
    if isinstance(value, (tuple, list)):
        return (int(value[0]), int(value[-1])) if len(value) else (1, 1)
    return (int(value), int(value))


def call_arg(args: Sequence[Any], kwargs: Mapping[str, Any], index: int, name: str, default: Any) -> Any:
    """Argument ``name`` of a call, given at position ``index`` or by keyword, else ``default``."""
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def pool_stride(stride: Any, kernel: Any) -> Pair:
    """A pooling stride: the kernel size when none is given (``None`` or empty), as PyTorch does."""
    return pair(kernel) if stride is None or (isinstance(stride, (tuple, list)) and not stride) else pair(stride)


def conv_padding(padding: Any, kernel: Any, dilation: Any = 1) -> tuple[Pair, Pair]:
    """The padding of a convolution as ``(before, after)``, each ``(rows, columns)``.

    ``padding`` is an int, a pair, ``"valid"`` (none) or ``"same"``: a total of
    ``dilation * (kernel - 1)`` per axis, ``total // 2`` before and the rest after (so an odd total
    pads one more pixel after, as ``torch.nn.functional.conv2d`` does).

    Example:
        >>> conv_padding("same", 4)
        ((1, 1), (2, 2))
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding != "same":
            raise ValueError(f"unknown padding {padding!r}; use an int, a pair, 'valid' or 'same'")
        k, d = pair(kernel), pair(dilation)
        total = tuple(d[a] * (k[a] - 1) for a in range(2))
        before = (total[0] // 2, total[1] // 2)
        return before, (total[0] - before[0], total[1] - before[1])
    p = pair(padding)
    return p, p


__all__ = ["Pair", "pair", "call_arg", "pool_stride", "conv_padding"]
