"""The site folder: one introspect output folder (:class:`introspect.plugin.OutputDir`), built in a
staging folder, swapped in whole when complete, locked against a second run.

On top of the output folder, a report keeps ``report.json``: the fingerprint of the model weights,
the data file list and the options, and the files of each unit of work (a layer, an image, the
filters). A rerun links the units of the previous site that have the same fingerprint into the new
one instead of computing them again.

``--out`` rules: a missing or empty folder, or an earlier report, is fine. The output of another
introspect command is replaced only with ``force``. A folder holding files introspect did not write
is refused; with ``force`` it is moved aside whole (renamed ``<out>.replaced-<time>``, nothing
deleted) and the report takes its place.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import torch

from introspect.plugin import IntrospectError, OutputDir, read_manifest

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


def read_report(folder: Path) -> dict | None:
    """The ``report.json`` of a site folder, or None when ``folder`` holds no report."""
    try:
        doc = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) and doc.get("generator") == GENERATOR else None


def _has_entries(folder: Path) -> bool:
    try:
        return any(folder.iterdir())
    except OSError:
        return False


class SiteFolder:
    """A context manager: the output folder of a new site for ``out``.

    Args:
        out (Path): the site folder (``--out``).
        force (bool): reuse nothing of a previous site; replace another command's output; move a
            folder of someone else's files aside.

    Attributes:
        previous (dict | None): the ``report.json`` of the site now in ``out`` (None with ``force``).
        moved_aside (Path | None): where a foreign ``out`` was moved (``force``).
    """

    def __init__(self, out: str | os.PathLike, force: bool = False, command: str | None = None):
        self.out = Path(out)
        self.force = force
        self.previous: dict | None = None
        self.moved_aside: Path | None = None
        self._od = OutputDir(self.out, command=command or GENERATOR, options={"force": force})
        self._paths: dict[str, Path] = {}

    def __enter__(self) -> SiteFolder:
        out = self.out
        if out.exists() and not out.is_dir():
            raise IntrospectError(f"--out {out} is a file, not a folder; choose a folder for the report")
        previous = read_report(out) if out.is_dir() else None
        if out.is_dir() and previous is None and _has_entries(out):
            other = read_manifest(out)
            if other is None:
                if not self.force:
                    raise IntrospectError(f"--out {out} holds files that are not an introspect report; choose a "
                                          "new or empty folder, or pass --force to move them aside")
                self.moved_aside = self._move_aside()
            elif not self.force:
                raise IntrospectError(f"--out {out} holds the output of `{other.get('command') or 'introspect'}`, "
                                      "not a report; choose another folder, or pass --force to replace it")
        self._od.__enter__()
        self.previous = None if self.force else previous
        return self

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.out.with_name(f"{self.out.name}.replaced-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = self.out.with_name(f"{self.out.name}.replaced-{stamp}-{n}")
        try:
            os.rename(self.out, target)
        except OSError as error:
            raise IntrospectError(f"cannot move {self.out} aside: {error.strerror or error}; "
                                  "choose another --out") from None
        return target

    def __exit__(self, exc_type, exc, tb) -> bool:
        return self._od.__exit__(exc_type, exc, tb)

    # -- writing -------------------------------------------------------------------------------
    def path(self, rel: str) -> Path:
        """The staging path of site file ``rel`` (its parent folders made)."""
        target = self._od.path(rel)
        self._paths[rel] = target
        return target

    def folder(self, rel: str, first_file: str) -> Path:
        """The staging path of folder ``rel``, for a writer that fills it (``result.save``)."""
        return self.path(f"{rel}/{first_file}").parent

    def reuse(self, files: list[str]) -> bool:
        """Link the previous site's ``files`` (relative paths) into the new one; False (and nothing
        linked) unless every one of them exists."""
        sources = [self.out / f for f in files]
        if not files or not all(p.is_file() for p in sources):
            return False
        for rel, src in zip(files, sources):
            dest = self.path(rel)
            try:
                os.link(src, dest)
            except OSError as error:
                if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
                shutil.copy2(src, dest)
        return True


__all__ = ["SiteFolder", "fingerprint", "read_report", "MANIFEST", "GENERATOR", "FORMAT"]
