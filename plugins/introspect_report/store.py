"""The site folder: built in a staging folder beside ``--out``, swapped in whole, locked.

A site is one output folder. It is written into a hidden staging folder in ``out``'s parent (the
same file system, so the swap is a rename); when the build is complete the staging folder takes the
place of ``out`` in one step (``renameat2(RENAME_EXCHANGE)`` where the kernel has it, two renames
otherwise), and the previous site is removed. A build that fails or is interrupted leaves the
previous site untouched. A lock file beside the folder keeps two builds into the same ``--out``
apart. A folder that is not a report (no ``report.json`` written by ``introspect report``) is
refused unless ``force``.

Reruns: the manifest lists the files of each unit of work (a layer, an image, the filters) under a
fingerprint of the model weights, the data file list and the options; a unit of the previous site
with the same fingerprint is hard-linked into the new one instead of computed again.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import torch

from introspect.plugin import IntrospectError

MANIFEST = "report.json"
GENERATOR = "introspect report"
FORMAT = 1


def fingerprint(model: torch.nn.Module, names: list[str], files: list[Path] | None, options: dict) -> str:
    """A SHA-256 of the model's weights and buffers, the data (file names, sizes and modification
    times, or the image names of an in-memory data set) and the options that change results."""
    h = hashlib.sha256()
    h.update(type(model).__qualname__.encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    for i, name in enumerate(names):
        h.update(f"\0{name}".encode())
        if files is not None:
            st = files[i].stat()
            h.update(f"|{st.st_size}|{st.st_mtime_ns}".encode())
    h.update(json.dumps(options, sort_keys=True, default=str).encode())
    return h.hexdigest()


def read_manifest(folder: Path) -> dict | None:
    """The manifest of a site folder, or None when ``folder`` holds no report."""
    try:
        doc = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("generator") == GENERATOR else None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2`` with ``RENAME_EXCHANGE``); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


class SiteFolder:
    """A context manager: the staging folder of a new site for ``out``.

    Args:
        out (Path): the site folder (``--out``).
        force (bool): replace a folder that is not a report, and reuse nothing of a previous site.

    Attributes:
        staging (Path): where to write the new site (inside the ``with`` block).
        previous (dict | None): the manifest of the site now in ``out`` (None with ``force``).
    """

    def __init__(self, out: str | os.PathLike, force: bool = False):
        self.out = Path(out)
        self.force = force
        self.staging: Path | None = None
        self.previous: dict | None = None
        self._lock = None

    def __enter__(self) -> SiteFolder:
        out = self.out
        if out.exists() and not out.is_dir():
            raise IntrospectError(f"--out {out} is a file, not a folder; choose a folder for the report")
        manifest = read_manifest(out) if out.is_dir() else None
        if out.is_dir() and manifest is None and any(out.iterdir()) and not self.force:
            raise IntrospectError(f"--out {out} holds files that are not an introspect report; "
                                  "choose a new or empty folder, or pass --force to replace it")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            self._take_lock()
            self._remove_leftovers()
            self.staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        except OSError as error:
            self._release()
            raise IntrospectError(f"cannot write the report to {out}: {error.strerror or error}; "
                                  "choose another --out") from None
        self.previous = None if self.force else manifest
        return self

    def _take_lock(self) -> None:
        path = self.out.parent / f".{self.out.name}.lock"
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            other = handle.read().strip() or "another process"
            handle.close()
            raise IntrospectError(f"another introspect run (process {other}) is writing {self.out}; "
                                  "wait for it or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock = handle

    def _remove_leftovers(self) -> None:
        """Staging folders of runs that were killed (we hold the lock, so none is in use)."""
        for p in self.out.parent.glob(f".{self.out.name}.tmp-*"):
            shutil.rmtree(p, ignore_errors=True)
        for p in self.out.parent.glob(f".{self.out.name}.old-*"):
            shutil.rmtree(p, ignore_errors=True)

    def _release(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def __exit__(self, exc_type, exc, tb) -> Literal[False]:
        staging, self.staging = self.staging, None
        try:
            if exc_type is None and staging is not None:
                self._swap(staging)
        finally:
            if staging is not None and staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
            self._release()
        return False

    def _swap(self, staging: Path) -> None:
        out = self.out
        try:
            os.chmod(staging, 0o777 & ~_umask())
            if out.exists():
                if _exchange(staging, out):  # staging now holds the old site
                    shutil.rmtree(staging, ignore_errors=True)
                    return
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
                os.rename(out, old / "site")
                os.rename(staging, out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(staging, out)
        except OSError as error:
            raise IntrospectError(f"cannot write the report to {out}: {error.strerror or error}; "
                                  "choose another --out") from None

    # -- reuse ---------------------------------------------------------------------------------
    def reuse(self, files: list[str]) -> bool:
        """Link the previous site's ``files`` (relative paths) into the staging folder; False (and
        nothing linked) unless every one of them exists."""
        if self.staging is None or not files:
            return False
        sources = [self.out / f for f in files]
        if not all(p.is_file() for p in sources):
            return False
        for rel, src in zip(files, sources):
            dest = self.staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dest)
            except OSError as error:
                if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
                shutil.copy2(src, dest)
        return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


__all__ = ["FORMAT", "GENERATOR", "MANIFEST", "SiteFolder", "fingerprint", "read_manifest"]
