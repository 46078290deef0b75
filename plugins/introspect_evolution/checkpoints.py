"""The checkpoints of one training run: finding them, their epochs, and checking they belong together.

A run of ``introspect train`` writes ``epoch_001.pt``, ``epoch_002.pt``, ... into one folder; each is
an introspect checkpoint whose ``extra["epoch"]`` is its epoch. :func:`gather` turns what a user
passes (files, folders of ``epoch_*.pt``, already-loaded models) into :class:`Checkpoint` entries in
column order, reading only the header of each file (its tensors are memory-mapped, not read), so a
mismatched architecture is reported before any work is done. Models are loaded one at a time
(:meth:`Checkpoint.load`), so a long run never holds more than a couple of models in memory.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from introspect.plugin import CHECKPOINT_FORMAT as FORMAT
from introspect.plugin import IntrospectError, load_model, meta_of, refuse_diverged

_EPOCH_NAME = re.compile(r"epoch_(\d+)", re.IGNORECASE)

#: What two checkpoints must share: architecture, input size and every weight's name and shape.
Signature = tuple


@dataclass
class Checkpoint:
    """One column of the evolution: a checkpoint file or an already-loaded model.

    Attributes:
        source (str): the file path, or ``"model N"`` for the N-th (0-based) loaded model.
        epoch (int | None): the epoch it was saved at (see :func:`gather` for where it comes from;
            None only until :func:`gather` has numbered it).
        path (Path | None): the file, or None for a loaded model.
        model (nn.Module | None): the loaded model, or None for a file.
        signature (Signature | None): ``(arch, input_size, ((name, shape), ...))`` read from the
            file's header; None when the header could not be read without loading the model.
    """

    source: str
    epoch: int | None
    path: Path | None = None
    model: nn.Module | None = None
    signature: Signature | None = None

    def load(self, device: str | torch.device = "cpu") -> nn.Module:
        """The model in eval mode (a file is loaded onto ``device``; a given model is used as it is)."""
        if self.model is not None:
            return self.model
        try:
            model = load_model(self.path, device=device)
        except IntrospectError as exc:
            if "pass --arch NAME" not in str(exc):
                raise
            raise IntrospectError(  # the loader asks for --arch, which this analysis has no use for
                f"checkpoint {self.source} does not name its architecture (not an introspect checkpoint); pass "
                "the checkpoints `introspect train` writes, or load each file with introspect.load_model(path, "
                "arch) and give the models to introspect.feature_evolution") from None
        refuse_diverged(model)  # an epoch after the run diverged: say so instead of projecting NaN
        return model


def signature_of(model: nn.Module) -> Signature:
    """``(arch, input_size, ((name, shape), ...))`` of a model; arch and input size are None when the
    model carries no introspect metadata."""
    meta = getattr(model, "introspect_meta", None)
    arch = meta_of(model).arch if meta is not None else None
    size = tuple(int(v) for v in meta_of(model).input_size) if meta is not None else None
    return arch, size, tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())


def mismatch(a: Signature, b: Signature) -> str | None:
    """How signature ``b`` differs from ``a`` (None when they agree; unknown parts are not compared)."""
    if a[0] is not None and b[0] is not None and a[0] != b[0]:
        return f"architecture {b[0]!r} instead of {a[0]!r}"
    if a[1] is not None and b[1] is not None and a[1] != b[1]:
        return f"input size {'x'.join(map(str, b[1]))} instead of {'x'.join(map(str, a[1]))}"
    shapes_a, shapes_b = dict(a[2]), dict(b[2])
    if list(shapes_a) != list(shapes_b):
        extra = [k for k in shapes_b if k not in shapes_a] + [k for k in shapes_a if k not in shapes_b]
        return f"different layers ({extra[0] if extra else 'in another order'})"
    for key, shape in shapes_a.items():
        if shapes_b[key] != shape:
            return f"{key} of shape {tuple(shapes_b[key])} instead of {tuple(shape)}"
    return None


def check_same(reference: Checkpoint, ref_sig: Signature, other: Checkpoint, sig: Signature) -> None:
    """Raise unless ``other`` has the architecture and input size of ``reference``."""
    problem = mismatch(ref_sig, sig)
    if problem is not None:
        raise IntrospectError(
            f"checkpoint {other.source} does not match {reference.source}: {problem}; "
            "pass checkpoints of one architecture and input size (one training run)"
        )


def _header(path: Path) -> tuple[int | None, Signature | None]:
    """``(epoch, signature)`` from an introspect checkpoint's header; ``(None, None)`` for any other
    file (the loader reports what is wrong with it when it is loaded)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not a zip checkpoint: leave it to the loader
        return None, None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        return None, None
    extra = ckpt.get("extra") or {}
    epoch = extra.get("epoch")
    epoch = int(epoch) if isinstance(epoch, (int, float)) and not isinstance(epoch, bool) else None
    state = ckpt.get("state_dict") or {}
    size = tuple(int(v) for v in ckpt["input_size"]) if ckpt.get("input_size") else None
    shapes = tuple((k, tuple(v.shape)) for k, v in state.items() if isinstance(v, torch.Tensor))
    return epoch, (ckpt.get("arch"), size, shapes)


def _name_epoch(path: Path) -> int | None:
    found = _EPOCH_NAME.search(path.stem)
    return int(found.group(1)) if found else None


def _folder(folder: Path) -> list[Path]:
    """The ``epoch_*.pt`` files of ``folder`` in epoch order (the number in the name, not its text)."""
    files = [p for p in folder.glob("epoch_*.pt") if p.is_file()]
    if not files:
        raise IntrospectError(f"no epoch_*.pt checkpoints in folder {folder}; pass the --out folder of "
                              "`introspect train` or the checkpoint files themselves")
    return sorted(files, key=lambda p: (_name_epoch(p) is None, _name_epoch(p) or 0, p.name))


def gather(checkpoints, epochs: Sequence[int] | None = None) -> list[Checkpoint]:
    """The columns of the evolution, in order, with their epochs, checked to belong together.

    Args:
        checkpoints: a folder holding ``epoch_*.pt`` files (sorted by the epoch in their header,
            else by the number in their names), or a list of checkpoint files, folders and loaded
            ``nn.Module`` objects (kept in the given order; a folder in the list is expanded in
            place).
        epochs (sequence of int | None): the epoch of each checkpoint; default: the ``epoch``
            stored in the checkpoint (``extra["epoch"]``, written by ``introspect train``), else the
            number in a file name ``epoch_NNN.pt``, else the position in the list (1, 2, ...).

    Returns:
        list[Checkpoint]: one per column.

    Raises:
        IntrospectError: nothing given, a missing file, a folder without ``epoch_*.pt``, ``epochs``
            of the wrong length, or two checkpoints that differ in architecture or input size.
    """
    items = [checkpoints] if isinstance(checkpoints, (str, os.PathLike, nn.Module)) else list(checkpoints or [])
    found: list[Checkpoint] = []
    for item in items:
        if isinstance(item, nn.Module):
            found.append(Checkpoint(f"model {sum(c.model is not None for c in found)}", None, model=item,
                                    signature=signature_of(item)))
            continue
        if not isinstance(item, (str, os.PathLike)):
            raise IntrospectError(f"a checkpoint must be a file, a folder or an nn.Module, not {type(item).__name__}")
        path = Path(item)
        if not path.exists():
            raise IntrospectError(f"checkpoint not found: {path}; check the path")
        described = []
        for file in _folder(path) if path.is_dir() else [path]:
            epoch, sig = _header(file)
            described.append(Checkpoint(str(file), epoch if epoch is not None else _name_epoch(file),
                                        path=file, signature=sig))
        if path.is_dir() and all(c.epoch is not None for c in described):
            described.sort(key=lambda c: c.epoch)
        found.extend(described)
    if not found:
        raise IntrospectError("no checkpoints given; pass epoch_*.pt files or the folder `introspect train` wrote")
    if epochs is not None:
        epochs = [int(e) for e in epochs]
        if len(epochs) != len(found):
            raise IntrospectError(
                f"got {len(epochs)} epochs for {len(found)} checkpoints; give one epoch per checkpoint"
            )
        for c, e in zip(found, epochs):
            c.epoch = e
    for i, c in enumerate(found):
        if c.epoch is None:
            c.epoch = i + 1
    first = next((c for c in found if c.signature is not None), None)
    for c in found:
        if first is not None and c.signature is not None:
            check_same(first, first.signature, c, c.signature)
    return found


__all__ = ["Checkpoint", "gather", "signature_of", "mismatch", "check_same"]
