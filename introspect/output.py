"""Output files and folders: a command's files are written all at once, or not at all.

:class:`OutputDir` is the one output-folder mechanism of every command. The rules:

- The files are built in a staging folder on the same file system as ``--out`` (beside it, or
  inside it when ``--out`` is a mount point or its parent cannot be written) and made visible in one
  step by renaming folders; a reader sees the old complete folder or the new complete one.
- A folder introspect wrote carries a manifest (:data:`MANIFEST`: command, options, version, files).
  An ``--out`` holding anything introspect did not write is refused: nothing of the user's is ever
  deleted or mixed in. A rerun replaces the whole folder, so no stale file survives.
- A lock beside the folder makes a second run into the same ``--out`` fail at once, naming the
  process that holds it. SIGTERM and SIGHUP clean up like Ctrl-C; what a killed run left (staging
  folders) is removed by the next run into the same ``--out``.

:func:`save_png` writes one file atomically; :func:`jsonable` and :func:`csv_text` turn results into
JSON values and CSV text; :func:`is_output_folder` tells data-set readers to skip a folder.
"""
from __future__ import annotations

import csv
import ctypes
import errno
import fcntl
import io
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from introspect.errors import IntrospectError, os_error_text, raise_terminated


def _png_image(array: Any) -> Image.Image:
    a = np.asarray(array)
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 3, 4))):
        raise IntrospectError(
            f"a PNG needs an (H, W), (H, W, 3) or (H, W, 4) uint8 array, got shape {a.shape} "
            f"{a.dtype}; convert it with to_uint8 first"
        )
    return Image.fromarray(np.ascontiguousarray(a[:, :, 0] if a.ndim == 3 and a.shape[2] == 1 else a))


_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG, errno.EFBIG)


def _short_write(error: OSError) -> bool:
    """numpy's ``OSError`` for a write cut short (a full disk), which carries no errno."""
    return error.errno is None and "requested and" in str(error) and "written" in str(error)


def _cannot_write(where: Path, error: BaseException) -> IntrospectError:
    """One line for a failed write into ``where``: what happened and what to do."""
    if isinstance(error, OSError) and _short_write(error):
        reason, fix = os_error_text(OSError(errno.ENOSPC, "", None))
        reason = f"{reason} (a write was cut short)"
    elif isinstance(error, OSError):
        reason, fix = os_error_text(error)
        if error.errno not in _DISK_ERRORS and not _short_write(error):  # the path is the problem
            fix = "choose another --out"
    else:  # torch.save's RuntimeError on a failed write
        reason, fix = "writing failed (is the disk full?)", "free some space, or choose --out on another disk"
    return IntrospectError(f"cannot write to output folder {where}: {reason}; {fix or 'choose another --out'}")


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


def _is_tensor(obj: Any) -> bool:
    """A ``torch.Tensor``, checked without importing torch (``introspect --help`` imports no torch): when
    torch was never imported, nothing is a tensor."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


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
    if _is_tensor(obj):
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


# --------------------------------------------------------------------------------------------------
# output folders
# --------------------------------------------------------------------------------------------------
#: The manifest file of a folder introspect wrote (command, options, version, files).
MANIFEST = ".introspect-manifest.json"
_STAGE, _OLD, _LOCK = ".introspect-stage-", ".introspect-old-", ".introspect-lock"
_OLD_STYLE_STAGE = re.compile(r"\.tmp-[A-Za-z0-9_]{8}$")  # staging of versions before 0.2


def is_output_folder(folder: str | os.PathLike) -> bool:
    """True when ``folder`` carries an introspect manifest (or is a staging folder of a run):
    data-set readers skip such folders, so a command never reads its own output.

    Example:
        >>> is_output_folder("introspect-out/top")
        True
    """
    return os.path.isfile(os.path.join(folder, MANIFEST))


def read_manifest(folder: str | os.PathLike) -> dict | None:
    """The manifest of a folder introspect wrote, or None (no manifest, or an unreadable one).

    Example:
        >>> read_manifest("introspect-out/top")["command"]
        'introspect top'
    """
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        return None
    return data


def _ours(name: str) -> bool:
    """Names introspect keeps inside an output folder besides the listed files."""
    return name == MANIFEST or name.startswith((_STAGE, _OLD, _LOCK))


def _tree(folder: Path) -> tuple[set[str], set[str]]:
    """``(files, folders)`` under ``folder`` as relative POSIX paths (links count as files)."""
    files: set[str] = set()
    dirs: set[str] = set()
    for here, subdirs, names in os.walk(folder):
        rel = Path(here).relative_to(folder)
        top = rel == Path(".")
        keep = [d for d in subdirs if not (top and _ours(d))]
        for d in keep:
            if os.path.islink(os.path.join(here, d)):
                files.add((rel / d).as_posix())
            else:
                dirs.add((rel / d).as_posix())
        subdirs[:] = [d for d in keep if not os.path.islink(os.path.join(here, d))]
        files.update((rel / n).as_posix() for n in names if not (top and _ours(n)))
    return files, dirs


def _check_writable(out: Path) -> None:
    """Raise ``OSError`` unless ``out`` can be made (its nearest existing ancestor is a writable
    folder); creates ``out``'s parent."""
    existing = next(p for p in (out, *out.parents) if p.exists() or p == Path(p.anchor))
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "a file is in the way, not a folder", str(existing))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "permission denied", str(existing))
    out.parent.mkdir(parents=True, exist_ok=True)


def _check_owned(out: Path) -> None:
    """Raise :class:`IntrospectError` unless ``out`` is missing, empty, or holds only files listed
    in its manifest (a folder introspect wrote, that a rerun may replace)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise IntrospectError(f"--out {out} is a file, not a folder; choose a new or empty folder")
    files, dirs = _tree(out)
    if not files and not dirs:
        return
    manifest = read_manifest(out)
    if manifest is None:
        example = sorted(files | dirs)[0]
        raise IntrospectError(
            f"--out {out} holds files introspect did not write (e.g. {example!r}); "
            "choose a new or empty folder"
        )
    if manifest.get("kind") == "run":
        raise IntrospectError(
            f"--out {out} holds a training run (checkpoints); choose another folder for this output"
        )
    listed = {str(f) for f in manifest["files"]}
    allowed = {p.as_posix() for f in listed for p in Path(f).parents if p != Path(".")}
    foreign = sorted((files - listed) | (dirs - allowed))
    if foreign:
        raise IntrospectError(
            f"--out {out} holds {foreign[0]!r}, which introspect did not write; "
            "move it away or choose a new or empty folder"
        )


class _Lock:
    """An exclusive ``fcntl.flock`` on ``path``, which holds the owner's process id.

    The file is removed on release; a run that opened it just before is detected (the inode changed)
    and tries again, so two runs can never both hold it.
    """

    def __init__(self, path: Path, out: Path) -> None:
        self.path, self.out = path, out
        self.fd: int | None = None

    def acquire(self) -> None:
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise IntrospectError(
                    f"another introspect run (process {owner}) is writing to {self.out}; "
                    "wait for it to finish or choose another --out"
                ) from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self.fd = fd
                return
            os.close(fd)  # the previous owner removed it while we opened it: take the new one
        raise IntrospectError(f"cannot lock {self.out}; try again")

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except OSError:
            pass


def _remove_leftovers(out: Path) -> None:
    """Remove what killed runs into ``out`` left: staging folders beside and inside it. An aside
    copy of the old folder whose swap was cut short is put back when ``out`` is missing."""
    prefix = f".{out.name}"
    try:
        beside = [p for p in out.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        beside = []
    for p in sorted(beside, key=lambda q: q.name):
        rest = p.name[len(prefix):]
        if rest.startswith(_OLD) and p.is_dir() and not out.exists():
            os.rename(p, out)
        elif rest.startswith((_STAGE, _OLD)) or _OLD_STYLE_STAGE.fullmatch(rest):
            _remove(p)
    if out.is_dir() and not out.is_symlink():
        for p in out.iterdir():
            if p.name.startswith((_STAGE, _OLD)):
                _remove(p)


def _catch_signals() -> dict:
    """Make SIGTERM and SIGHUP raise :class:`Terminated` (in the main thread, where they still have
    their default action); returns the handlers to put back."""
    saved = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) is signal.SIG_DFL:
                saved[sig] = signal.signal(sig, raise_terminated)
    return saved


def _invocation() -> tuple[str | None, dict]:
    """The running command (``"introspect top"``) and its options, from click's context."""
    try:
        import click
    except ImportError:  # pragma: no cover - click is a dependency
        return None, {}
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return None, {}
    return ctx.command_path, dict(ctx.params)


class _Guarded:
    """What :class:`OutputDir` and :class:`RunFolder` share: the lock beside (or inside) the folder,
    SIGTERM/SIGHUP handlers while it is open, and cleanup when opening fails half-way."""

    _lock: _Lock | None = None
    _signals: dict = {}

    def _open(self, out: Path, beside: bool, prepare) -> None:
        """Lock ``out``, remove what killed runs left, then ``prepare()``; undone on failure."""
        try:
            self._lock = _Lock(out.parent / f".{out.name}{_LOCK}" if beside else out / _LOCK, out)
            self._lock.acquire()
        except OSError as error:
            self._lock = None
            raise _cannot_write(out, error) from None
        try:
            _remove_leftovers(out)
            prepare()
            self._signals = _catch_signals()
        except BaseException as error:
            self._cleanup()
            if isinstance(error, OSError):
                raise _cannot_write(out, error) from None
            raise

    def _cleanup(self) -> None:
        for sig, handler in self._signals.items():
            signal.signal(sig, handler)
        self._signals = {}
        if self._lock is not None:
            self._lock.release()
            self._lock = None


class OutputDir(_Guarded):
    """Write a command's files all at once, or not at all, into a folder introspect owns.

    On entering: the folder's parent is created, a lock beside ``out`` is taken (a second run into
    the same ``out`` fails at once, naming this process), what killed runs left is removed, ``out``
    is checked (it must be missing, empty, or a folder introspect wrote: anything else is refused),
    and a staging folder is made on the same file system (beside ``out``, or inside it when ``out``
    is a mount point or its parent cannot be written). Files are written into the staging folder.
    When the ``with`` body finishes, a manifest is added and the staging folder replaces ``out`` by
    renames (old folder aside, new one in, old one removed), so a reader sees the old complete folder
    or the new complete one. When the body raises -- or SIGTERM/SIGHUP/Ctrl-C arrive -- the staging
    folder is removed and ``out`` is left exactly as it was.

    Args:
        out (str | os.PathLike): the final output folder (the user's ``--out``).
        command (str | None): the command recorded in the manifest; default the running click
            command (``"introspect top"``), else None.
        options (dict | None): the options recorded in the manifest; default the click command's.

    Attributes:
        out (Path): the final folder.
        files (list[Path]): final paths of the files written, sorted (filled on successful exit).

    Raises:
        IntrospectError: ``out`` cannot be created or written to (permission, a file in the way, a
            full or read-only disk), holds files introspect did not write, another run is writing
            to it, or two outputs were given the same file name.

    Example:
        >>> with OutputDir("runs/cat") as od:
        ...     od.save_png("top9.png", picture)
        ...     od.save_json("top9.json", {"layer": "conv5", "scores": scores})
        >>> od.files
        [PosixPath('runs/cat/top9.json'), PosixPath('runs/cat/top9.png')]
    """

    def __init__(self, out: str | os.PathLike, *, command: str | None = None,
                 options: dict | None = None) -> None:
        self.out = Path(out)
        self.files: list[Path] = []
        self.command, self.options = command, options
        self._tmp: Path | None = None
        self._names: set[str] = set()

    # -- entering ---------------------------------------------------------------------------------
    def _target(self) -> Path:
        out = Path(os.path.abspath(self.out))
        return out.resolve() if out.is_symlink() else out

    def _beside(self, out: Path) -> bool:
        """Stage beside ``out`` (one-step swap) unless it is a mount point or its parent is locked."""
        if not os.access(out.parent, os.W_OK | os.X_OK):
            return False
        return not out.exists() or os.stat(out).st_dev == os.stat(out.parent).st_dev

    def __enter__(self) -> OutputDir:
        out = Path(os.path.abspath(self.out))
        self.files, self._names = [], set()
        try:
            out = self._target()
            _check_writable(out)
            beside = self._beside(out)
        except OSError as error:
            raise _cannot_write(out, error) from None
        self._final, self._beside_mode = out, beside

        def prepare() -> None:
            _check_owned(out)
            where = (out.parent, f".{out.name}{_STAGE}") if beside else (out, _STAGE)
            self._tmp = Path(tempfile.mkdtemp(prefix=where[1], dir=where[0]))
            self._write_manifest(self._tmp, [])  # readers skip a staging folder too
        self._open(out, beside, prepare)
        return self

    # -- leaving ----------------------------------------------------------------------------------
    def __exit__(self, exc_type, exc, tb) -> Literal[False]:
        try:
            if exc_type is None and self._tmp is not None:
                try:
                    self.files = self._commit(self._tmp)
                except OSError as error:
                    raise _cannot_write(self._final, error) from None
            elif isinstance(exc, OSError) or _write_failed(exc):
                raise _cannot_write(self._final, exc) from None
        finally:
            self._cleanup()
        return False

    def _cleanup(self) -> None:
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        super()._cleanup()

    def _write_manifest(self, folder: Path, files: list[str]) -> None:
        from introspect import __version__

        command, options = _invocation()
        doc = {
            "introspect": __version__,
            "command": self.command if self.command is not None else command,
            "options": self.options if self.options is not None else options,
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": files,
        }
        text = json.dumps(jsonable(doc), indent=2, allow_nan=False, default=str) + "\n"
        (folder / MANIFEST).write_text(text, encoding="utf-8")

    def _commit(self, tmp: Path) -> list[Path]:
        """Add the manifest and put the staging folder in place of :attr:`out`."""
        out = self._final
        names, _ = _tree(tmp)
        self._write_manifest(tmp, sorted(names))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the output is for everyone
        if self._beside_mode:
            _swap_beside(tmp, out)
        else:
            _swap_inside(tmp, out)
        return [Path(self.out) / n for n in sorted(names)]

    # -- writing ----------------------------------------------------------------------------------
    def path(self, name: str | os.PathLike) -> Path:
        """The staging path for output file ``name`` (relative, may contain subfolders).

        Write the file there; it appears as ``out / name`` on successful exit. Each name may be
        given once per run: two outputs mapped to the same file name are an error, not a silent
        overwrite.

        Example:
            >>> torch.save(state, od.path("state.pt"))
        """
        if self._tmp is None:
            raise IntrospectError("OutputDir.path used outside its with block; call it inside `with`")
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts or _ours(rel.parts[0]):
            raise IntrospectError(
                f"output file name {str(name)!r} must be relative, without '..' and not introspect's "
                "own; e.g. 'a.png'"
            )
        key = rel.as_posix()
        if key in self._names:
            raise IntrospectError(
                f"two outputs of this run map to the same file name {key!r}; give them distinct names"
            )
        self._names.add(key)
        target = self._tmp / rel
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise _cannot_write(self._final, error) from None
        return target

    def _write(self, name: str, write) -> Path:
        target = self.path(name)
        try:
            write(target)
        except OSError as error:
            raise _cannot_write(self._final, error) from None
        return target

    def save_png(self, name: str, array: Any) -> Path:
        """Save a ``uint8`` ``(H, W)``/``(H, W, 3)``/``(H, W, 4)`` array as PNG ``name``."""
        image = _png_image(array)
        return self._write(name, lambda target: image.save(target, format="PNG"))

    def save_npy(self, name: str, array: Any) -> Path:
        """Save an array (or tensor, moved to CPU) with ``np.save`` as ``name``."""
        data = array.detach().cpu().numpy() if _is_tensor(array) else np.asarray(array)

        def write(target: Path) -> None:
            with open(target, "wb") as f:
                np.save(f, data)
        return self._write(name, write)

    def save_json(self, name: str, obj: Any) -> Path:
        """Save ``obj`` as indented JSON (numpy/torch values converted by :func:`jsonable`)."""
        text = json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n"
        return self.save_text(name, text)

    def save_csv(self, name: str, rows: Sequence[dict], columns: Sequence[str] | None = None) -> Path:
        """Save ``rows`` (dicts, column -> value) as CSV file ``name``; see :func:`csv_text`."""
        return self.save_text(name, csv_text(rows, columns))

    def save_text(self, name: str, text: str) -> Path:
        """Save ``text`` as UTF-8 file ``name``."""
        return self._write(name, lambda target: target.write_text(text, encoding="utf-8"))


def _write_failed(exc: BaseException | None) -> bool:
    """torch.save's error for a failed write (a full disk), which is not an ``OSError``."""
    text = str(exc) if isinstance(exc, RuntimeError) else ""
    return "PytorchStreamWriter" in text or "inline_container" in text or "file write failed" in text


def _swap_beside(tmp: Path, out: Path) -> None:
    """Put ``tmp`` in place of ``out`` (same parent): one exchange, or old aside then new in."""
    if not out.exists():
        os.rename(tmp, out)
        return
    if _exchange(tmp, out):
        return  # ``tmp`` now holds the old folder; the caller removes it
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}{_OLD}", dir=out.parent))
    try:
        os.rename(out, old)  # replaces the empty folder ``old``
    except OSError:
        old.rmdir()
        raise
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _swap_inside(tmp: Path, out: Path) -> None:
    """Put the entries of ``tmp`` (inside ``out``) in place of ``out``'s own, by renames within the
    one file system (``out`` itself cannot move: a mount point); undone when a rename fails."""
    aside = Path(tempfile.mkdtemp(prefix=_OLD, dir=out))
    old = sorted((p.name for p in out.iterdir() if not p.name.startswith((_STAGE, _OLD, _LOCK))),
                 key=lambda n: n != MANIFEST)  # the old manifest leaves first
    new = sorted((p.name for p in tmp.iterdir()), key=lambda n: n == MANIFEST)  # the new one comes last
    moved_old: list[str] = []
    moved_new: list[str] = []
    try:
        for name in old:
            os.rename(out / name, aside / name)
            moved_old.append(name)
        for name in new:
            os.rename(tmp / name, out / name)
            moved_new.append(name)
    except OSError:
        for name in reversed(moved_new):
            os.rename(out / name, tmp / name)
        for name in reversed(moved_old):
            os.rename(aside / name, out / name)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


class _Checked(Exception):
    """Leaves an :class:`OutputDir` without committing it (see :func:`check_output_folder`)."""


def check_output_folder(out: str | os.PathLike) -> None:
    """Fail now, before long work, where :class:`OutputDir` would refuse ``out`` (not writable,
    holding files introspect did not write, another run writing to it); nothing is written.

    Example:
        >>> check_output_folder("holiday-photos")   # IntrospectError: --out holiday-photos holds ...
    """
    try:
        with OutputDir(out):
            raise _Checked
    except _Checked:
        pass


# --------------------------------------------------------------------------------------------------
# training run folders
# --------------------------------------------------------------------------------------------------
_CACHE = "data"  # the data cache `introspect train` keeps in its run folder


def check_run_folder(out: str | os.PathLike, *, resume: bool = False, force: bool = False) -> None:
    """Raise :class:`IntrospectError` unless a training run may write into ``out``.

    Allowed: a missing or empty folder (a ``data`` cache alone counts as empty); with ``resume``, a
    folder of an earlier run (also one written before run folders had a manifest); with ``force``,
    any folder introspect wrote (its files are removed when the run starts). Refused: a finished or
    unfinished run without ``resume``/``force``, and a folder holding files introspect did not write.

    Example:
        >>> check_run_folder("runs/zf")  # a finished run there
        IntrospectError: --out runs/zf holds a finished training run (12 epochs); ...
    """
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise IntrospectError(f"--out {out} is a file, not a folder; choose a new or empty folder")
    entries = sorted(p.name for p in out.iterdir() if p.name != _CACHE and not _ours(p.name))
    manifest = read_manifest(out)
    if manifest is None:
        if entries and not resume:
            raise IntrospectError(
                f"--out {out} holds files introspect did not write (e.g. {entries[0]!r}); choose a new or "
                "empty folder, or pass --resume CKPT to continue a run written there"
            )
        return
    if resume or force:
        return
    if manifest.get("kind") != "run":
        raise IntrospectError(
            f"--out {out} holds the output of {manifest.get('command') or 'introspect'}; choose a new or "
            "empty folder for the run, or replace it with --force"
        )
    state = f"a finished training run ({manifest.get('epochs')} epochs)" if manifest.get("finished") else \
        "an unfinished training run"
    raise IntrospectError(
        f"--out {out} holds {state}; continue it with --resume {out}/epoch_NNN.pt, "
        "replace it with --force, or choose a new folder"
    )


class RunFolder(_Guarded):
    """A training run's folder: locked while the run goes on, files added one by one (each written
    to a temporary file in the folder, then renamed), a manifest (``kind: run``) that records the
    files, the target number of epochs and whether the run finished.

    Args:
        out (str | os.PathLike): the run folder.
        resume (bool): the run continues one written there (its files are kept).
        force (bool): replace the files of an earlier run introspect wrote there.
        epochs (int | None): the run's target, recorded in the manifest.

    Raises:
        IntrospectError: see :func:`check_run_folder`; the folder cannot be written; another run
            is writing to it.

    Example:
        >>> with RunFolder("runs/zf", epochs=12) as run:
        ...     run.write("epoch_001.pt", lambda path: torch.save(state, path))
        ...     run.finish()
    """

    def __init__(self, out: str | os.PathLike, *, resume: bool = False, force: bool = False,
                 epochs: int | None = None) -> None:
        self.out = Path(out)
        self.resume, self.force, self.epochs = resume, force, epochs
        self.files: list[str] = []
        self.finished = False

    def __enter__(self) -> RunFolder:
        out = Path(os.path.abspath(self.out))
        try:
            _check_writable(out)
            beside = os.access(out.parent, os.W_OK | os.X_OK)
            out.mkdir(exist_ok=True)
        except OSError as error:
            raise _cannot_write(out, error) from None
        self._final = out

        def prepare() -> None:
            check_run_folder(out, resume=self.resume, force=self.force)
            self._start(out)
        self._open(out, beside, prepare)
        return self

    def _start(self, out: Path) -> None:
        manifest = read_manifest(out)
        if manifest is not None and self.force:
            for name in manifest["files"]:
                _remove(out / str(name))
            manifest = None
        if manifest is not None:
            self.files = [str(f) for f in manifest["files"]]
        elif self.resume:  # a run written before run folders had a manifest
            self.files = sorted(p.name for p in out.iterdir()
                                if p.is_file() and p.name != _CACHE and not _ours(p.name))
        self._write_manifest()

    def _write_manifest(self) -> None:
        from introspect import __version__

        command, options = _invocation()
        doc = {"introspect": __version__, "kind": "run", "command": command, "options": options,
               "epochs": self.epochs, "finished": self.finished,
               "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "files": sorted(self.files)}
        text = json.dumps(jsonable(doc), indent=2, allow_nan=False, default=str) + "\n"
        self._replace(MANIFEST, lambda path: path.write_text(text, encoding="utf-8"))

    def _replace(self, name: str, write) -> Path:
        target = self._final / name
        fd, tmp = tempfile.mkstemp(prefix=_STAGE, suffix=f"-{name}", dir=self._final)  # torch.save wants a stem
        os.close(fd)
        try:
            write(Path(tmp))
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, target)
        except BaseException as error:
            if os.path.exists(tmp):
                os.unlink(tmp)
            if isinstance(error, OSError) or _write_failed(error):
                raise _cannot_write(self._final, error) from None
            raise
        return target

    def write(self, name: str, write) -> Path:
        """Write file ``name`` (a plain name) with ``write(path)`` into a temporary file, then rename
        it into place: a reader never sees half a checkpoint. Returns the final path."""
        if Path(name).name != name or _ours(name) or name == _CACHE:
            raise IntrospectError(f"run file name {name!r} must be a plain file name; e.g. 'epoch_001.pt'")
        self._replace(name, write)
        if name not in self.files:
            self.files.append(name)
        self._write_manifest()
        return Path(self.out) / name

    def save_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` as indented JSON (see :func:`jsonable`)."""
        text = json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n"
        return self.write(name, lambda path: path.write_text(text, encoding="utf-8"))

    def save_png(self, name: str, array: Any) -> Path:
        """Write a ``uint8`` image array as PNG ``name``."""
        image = _png_image(array)
        return self.write(name, lambda path: image.save(path, format="PNG"))

    def finish(self) -> None:
        """Record that the run reached its target number of epochs."""
        self.finished = True
        self._write_manifest()

    def __exit__(self, exc_type, exc, tb) -> Literal[False]:
        self._cleanup()
        return False


__all__ = ["save_png", "jsonable", "csv_text", "OutputDir", "MANIFEST", "is_output_folder", "read_manifest",
           "check_run_folder", "RunFolder", "check_output_folder"]
