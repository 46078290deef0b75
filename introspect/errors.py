"""Errors a user can act on.

Every error that reaches a user is an :class:`IntrospectError`: one line that names the problem and
the fix. The CLI prints it without a traceback and exits non-zero.
"""
from __future__ import annotations

import difflib
import errno
import os
import signal
from collections.abc import Iterable


class IntrospectError(ValueError):
    """A problem with the user's input, stated in one line with its fix."""


def closest(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """Return a ``" (did you mean 'a', 'b'?)"`` suffix for ``name``, or ``""`` if nothing is close."""
    matches = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)
    if not matches:
        return ""
    return " (did you mean " + ", ".join(repr(m) for m in matches) + "?)"


class IntrospectWarning(UserWarning):
    """Something a user should know that is not an error (the command line prints it as one line)."""


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when SIGTERM or SIGHUP arrives, so that ``with`` blocks (output
    folders, hooks) clean up exactly as they do for Ctrl-C.

    Attributes:
        signum (int): the signal number; the command line exits with ``128 + signum``.
    """

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(f"terminated by {signal.Signals(self.signum).name}")


def raise_terminated(signum, frame) -> None:
    """A signal handler that raises :class:`Terminated`."""
    raise Terminated(signum)


#: errno -> (what happened, what to do), in plain words.
_OS_ERRORS = {
    errno.ENAMETOOLONG: ("the file name is too long for the file system", "use a shorter name or path"),
    errno.EACCES: ("permission denied", "check the permissions, or choose another location"),
    errno.EPERM: ("operation not permitted", "check the permissions, or choose another location"),
    errno.ENOSPC: ("no space left on the disk", "free some space, or choose --out on another disk"),
    errno.EDQUOT: ("the disk quota is exceeded", "free some space, or choose --out on another disk"),
    errno.EROFS: ("the file system is read-only", "choose a location on a writable disk"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "check the path"),
    errno.EISDIR: ("it is a folder, not a file", "check the path"),
    errno.EEXIST: ("it already exists", "choose another name"),
    errno.ENOTEMPTY: ("the folder is not empty", "choose a new or empty folder"),
    errno.ELOOP: ("too many levels of symbolic links", "check the links in the path"),
    errno.EMFILE: ("too many open files", "raise the limit (ulimit -n) or use fewer workers"),
    errno.ENFILE: ("too many open files in the system", "close other programs or use fewer workers"),
    errno.EIO: ("an input/output error on the disk", "check the disk"),
    errno.EBUSY: ("the file or folder is busy (in use or a mount point)", "choose another location"),
    errno.EXDEV: ("the paths are on different file systems", "choose a location on one file system"),
    errno.EFBIG: ("the file is too large for the file system", "choose another disk"),
}


def os_error_text(error: OSError) -> tuple[str, str]:
    """``(what happened, what to do)`` for an ``OSError``, in plain words, the file name included.

    Example:
        >>> os_error_text(OSError(errno.ENOSPC, "No space left on device", "out/a.png"))
        ('out/a.png: no space left on the disk', 'free some space, or choose --out on another disk')
    """
    what, fix = _OS_ERRORS.get(error.errno or 0, (error.strerror or str(error) or type(error).__name__, ""))
    name = error.filename
    if name is not None:
        name = os.fsdecode(name)
        if len(name) > 120:
            name = name[:60] + "..." + name[-40:]
        what = f"{name}: {what}"
    return what, fix


__all__ = ["IntrospectError", "IntrospectWarning", "closest", "Terminated", "raise_terminated", "os_error_text"]
