"""Output files and folders: a command's files are written all at once, or not at all.

:class:`OutputDir` collects every file of a command in a staging folder and makes them visible when
the command succeeds; :func:`save_png` writes one file atomically; :func:`jsonable` and
:func:`csv_text` turn results into JSON values and CSV text.
"""
from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from introspect.errors import IntrospectError

def _png_image(array: Any) -> Image.Image:
    a = np.asarray(array)
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 3, 4))):
        raise IntrospectError(
            f"a PNG needs an (H, W), (H, W, 3) or (H, W, 4) uint8 array, got shape {a.shape} "
            f"{a.dtype}; convert it with to_uint8 first"
        )
    return Image.fromarray(np.ascontiguousarray(a[:, :, 0] if a.ndim == 3 and a.shape[2] == 1 else a))


def _cannot_write(where: Path, error: BaseException) -> IntrospectError:
    reason = getattr(error, "strerror", None) or str(error)
    return IntrospectError(f"cannot write to output folder {where}: {reason}; choose another --out")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_png(path: str | os.PathLike, array: Any) -> Path:
    """Write a ``uint8`` array as a PNG atomically: a temp file in the same folder, then ``os.replace``.

    Readers never see a half-written file; the folder is created if needed.

    Args:
        path (str | os.PathLike): destination file.
        array (np.ndarray): ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` ``uint8``.

    Returns:
        Path: ``path``.

    Raises:
        IntrospectError: the array is not uint8 image data, or the folder is not writable.

    Example:
        >>> save_png("out/filters.png", grid(tiles))
        PosixPath('out/filters.png')
    """
    path = Path(path)
    image = _png_image(array)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; a PNG is for everyone to read
        os.replace(tmp, path)
    except OSError as error:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise _cannot_write(path.parent, error) from None
    return path


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy/torch scalars and arrays, tuples, sets and paths turned into JSON types;
    NaN and infinities become ``None`` (JSON ``null``: strict JSON has no NaN).

    Example:
        >>> jsonable({np.int64(1): (np.float32(0.5), torch.tensor([1, 2]), float("nan"))})
        {1: [0.5, [1, 2], None]}
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {(k.item() if isinstance(k, np.generic) else k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(jsonable(v) for v in obj)
    if isinstance(obj, (np.generic, np.ndarray)):
        return jsonable(obj.tolist())
    if isinstance(obj, torch.Tensor):
        return jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def csv_text(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """Rows of a table as CSV text with a header line (``None`` becomes an empty cell).

    Args:
        rows (list of dict): one dict per row, column -> value.
        columns (list[str] | None): the columns, in order (other keys are left out); default the keys
            of the first row.

    Returns:
        str: the CSV text, ``\n`` line ends.

    Example:
        >>> csv_text([{"layer": "conv1", "distance": 0.5}])
        'layer,distance\nconv1,0.5\n'
    """
    if columns is None:
        if not rows:
            raise IntrospectError("a CSV table needs rows or column names; pass columns=[...]")
        columns = list(rows[0])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


class OutputDir:
    """Write a command's files all at once, or not at all.

    Files are written into a hidden folder next to the output folder (``.NAME.tmp-XXXX`` in
    ``out.parent``); when the ``with`` body finishes they are moved into ``out`` (created if needed;
    files of the same name are replaced) and the hidden folder is removed. When the body raises,
    the hidden folder is removed and ``out`` is left exactly as it was. Writability is checked on
    entering, before the long work starts.

    Args:
        out (str | os.PathLike): the final output folder (the user's ``--out``).

    Attributes:
        out (Path): the final folder.
        files (list[Path]): final paths of the files moved in, sorted (filled on successful exit).

    Raises:
        IntrospectError: ``out`` or its parent cannot be created or written to (e.g. the parent is
            a file, or permission is denied).

    Example:
        >>> with OutputDir("runs/cat") as od:
        ...     od.save_png("top9.png", picture)
        ...     od.save_json("top9.json", {"layer": "conv5", "scores": scores})
        >>> od.files
        [PosixPath('runs/cat/top9.json'), PosixPath('runs/cat/top9.png')]
    """

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        self.files: list[Path] = []
        self._tmp: Path | None = None

    def __enter__(self) -> "OutputDir":
        out = self.out
        try:
            existing = next(p for p in (out, *out.parents) if p.exists() or p == Path(p.anchor))
            if not existing.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, f"{existing} is a file, not a folder")
            if not os.access(existing, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, f"permission denied on {existing}")
            out.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = Path(tempfile.mkdtemp(prefix=f".{out.name or 'out'}.tmp-", dir=out.parent))
        except OSError as error:
            raise _cannot_write(out, error) from None
        self.files = []
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        tmp, self._tmp = self._tmp, None
        try:
            if exc_type is None and tmp is not None:
                self.files = self._commit(tmp)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        return False

    def _commit(self, tmp: Path) -> list[Path]:
        """Move every file of ``tmp`` into :attr:`out`, keeping relative paths."""
        moved = []
        try:
            for src in sorted(p for p in tmp.rglob("*") if not p.is_dir()):
                dest = self.out / src.relative_to(tmp)
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.replace(src, dest)
                except OSError as error:
                    if error.errno != errno.EXDEV:  # another file system: copy instead
                        raise
                    shutil.move(os.fspath(src), os.fspath(dest))
                moved.append(dest)
        except OSError as error:
            raise _cannot_write(self.out, error) from None
        return moved

    def path(self, name: str | os.PathLike) -> Path:
        """The temporary path for output file ``name`` (relative, may contain subfolders).

        Write the file there; it is moved to ``out / name`` on successful exit.

        Example:
            >>> torch.save(state, od.path("state.pt"))
        """
        if self._tmp is None:
            raise IntrospectError("OutputDir.path used outside its with block; call it inside `with`")
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise IntrospectError(
                f"output file name {name!r} must be relative, without '..'; e.g. 'a.png'"
            )
        target = self._tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def save_png(self, name: str, array: Any) -> Path:
        """Save a ``uint8`` ``(H, W)``/``(H, W, 3)``/``(H, W, 4)`` array as PNG ``name``."""
        target = self.path(name)
        _png_image(array).save(target, format="PNG")
        return target

    def save_npy(self, name: str, array: Any) -> Path:
        """Save an array (or tensor, moved to CPU) with ``np.save`` as ``name``."""
        target = self.path(name)
        data = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
        with open(target, "wb") as f:
            np.save(f, data)
        return target

    def save_json(self, name: str, obj: Any) -> Path:
        """Save ``obj`` as indented JSON (numpy/torch values converted by :func:`jsonable`)."""
        target = self.path(name)
        target.write_text(json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n", encoding="utf-8")
        return target

    def save_csv(self, name: str, rows: Sequence[dict], columns: Sequence[str] | None = None) -> Path:
        """Save ``rows`` (dicts, column -> value) as CSV file ``name``; see :func:`csv_text`."""
        return self.save_text(name, csv_text(rows, columns))

    def save_text(self, name: str, text: str) -> Path:
        """Save ``text`` as UTF-8 file ``name``."""
        target = self.path(name)
        target.write_text(text, encoding="utf-8")
        return target


__all__ = ["save_png", "jsonable", "csv_text", "OutputDir"]
