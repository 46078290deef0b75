"""How results and progress show themselves, in a terminal and in a notebook.

A result class derives from :class:`Shown` (with ``@dataclass(repr=False)``) and implements two
methods:

* ``_repr_lines()``: one to five lines for ``repr()`` -- the method, the layer(s), shapes and the
  headline numbers, never tensor contents;
* ``_figures()``: its pictures by name, main figure first (the one ``save`` writes as the main
  picture), each a function returning an ``H x W x 3`` ``uint8`` array, or a string saying which
  option to turn on when the data it needs was not computed.

It then has ``result.figure()`` (a PIL image, or a dict of named PIL images when it has several),
``result.figure(name)`` and ``_repr_png_`` (Jupyter's ``display(result)`` shows the main figure).

Progress: methods decorated with :func:`notebook_progress` draw a bar in a Jupyter notebook when
called there with ``progress=None`` (the default); ``progress=False`` turns it off, a callable
``progress(phase, done, total)`` is used as given. Outside a notebook ``None`` shows nothing.
"""
from __future__ import annotations

import functools
import html
import io
import sys
import time
from collections.abc import Callable
from typing import Any

from introspect.errors import IntrospectError

#: A named picture: a function drawing it (``H x W x 3`` uint8), or why it cannot be drawn.
Picture = Callable[[], Any] | str


def to_pil(picture):
    """A PIL image of an ``H x W x 3`` (or ``H x W``) ``uint8`` array (a PIL image is returned as is)."""
    import numpy as np
    from PIL import Image

    if isinstance(picture, Image.Image):
        return picture
    return Image.fromarray(np.ascontiguousarray(np.asarray(picture, dtype=np.uint8)))


class Shown:
    """Mixin for results: a short ``repr``, ``figure()`` and ``_repr_png_`` (see the module docstring)."""

    def _repr_lines(self) -> list[str]:
        raise NotImplementedError

    def _figures(self) -> dict[str, Picture]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return "\n".join(self._repr_lines())

    def figure(self, name: str | None = None):
        """The result's figure as a PIL image: the one ``save`` writes as its main picture.

        Args:
            name (str | None): one picture by name (``result.figure_names()``); default all of them:
                the image itself when there is one, else a dict of named images (main first).

        Returns:
            PIL.Image.Image | dict[str, PIL.Image.Image]

        Raises:
            IntrospectError: an unknown name, or a picture whose data was not computed (the message
                says which option to turn on).
        """
        pictures = self._figures()
        if name is not None:
            key = name[:-4] if name.endswith(".png") else name
            if key not in pictures:
                from introspect.errors import closest

                raise IntrospectError(f"no figure {name!r}{closest(key, list(pictures))}; "
                                      f"this result has {', '.join(pictures)}")
            return to_pil(_draw(pictures[key]))
        ready = {k: p for k, p in pictures.items() if not isinstance(p, str)}
        if not ready:
            raise IntrospectError(next(iter(pictures.values())) if pictures else "this result has no figure")
        if len(pictures) == 1:
            return to_pil(_draw(next(iter(ready.values()))))
        return {k: to_pil(_draw(p)) for k, p in ready.items()}

    def figure_names(self) -> list[str]:
        """The names ``figure(name)`` takes, main figure first."""
        return list(self._figures())

    def _repr_png_(self) -> bytes | None:
        """The main figure as PNG bytes, for Jupyter (None when its data was not computed)."""
        pictures = self._figures()
        main = next(iter(pictures.values()), None)
        if main is None or isinstance(main, str):
            return None
        buffer = io.BytesIO()
        to_pil(_draw(main)).save(buffer, format="PNG")
        return buffer.getvalue()


def drawn_once(draw_all: Callable[[], dict]) -> Callable[[str], Callable[[], Any]]:
    """For results whose pictures are drawn together (``draw_all() -> {"name.png": array}``):
    ``picture(name)`` is a :data:`Picture` that draws them all on first use and returns ``name``'s."""
    drawn: dict = {}

    def picture(name: str) -> Callable[[], Any]:
        def draw():
            if not drawn:
                drawn.update(draw_all())
            return drawn[name + ".png"]
        return draw

    return picture


def _draw(picture: Picture):
    if isinstance(picture, str):
        raise IntrospectError(picture)
    return picture()


def shape_text(tensor) -> str:
    """``"3x224x224"``: a tensor's shape for a repr (``"-"`` for None)."""
    return "-" if tensor is None else "x".join(str(int(n)) for n in tensor.shape)


def short_list(items, most: int = 6) -> str:
    """``"a, b, c, ... (+4)"``: at most ``most`` items of a list for a repr."""
    items = [str(i) for i in items]
    more = f", ... (+{len(items) - most})" if len(items) > most else ""
    return ", ".join(items[:most]) + more


# --------------------------------------------------------------------------------------------------
# progress in a notebook
# --------------------------------------------------------------------------------------------------
def in_notebook() -> bool:
    """Whether this code runs in a Jupyter kernel (IPython's ``ZMQInteractiveShell``)."""
    if "IPython" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class _BarView:
    """One bar as a notebook shows it: an HTML ``<progress>`` element, text for other front ends."""

    def __init__(self, phase: str, done: int, total: int, seconds: float):
        self.phase, self.done, self.total, self.seconds = phase, done, total, seconds

    def __repr__(self) -> str:
        width = 30
        filled = int(width * self.done / self.total) if self.total else width
        return f"{self.phase} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {self.seconds:.1f} s"

    def _repr_html_(self) -> str:
        return (f"<div><code>{html.escape(self.phase)}</code> <progress value='{self.done}' "
                f"max='{max(1, self.total)}' style='width: 20em'></progress> "
                f"{self.done}/{self.total} &middot; {self.seconds:.1f} s</div>")


class NotebookBars:
    """A ``progress(phase, done, total)`` callable drawing one bar per phase in a notebook cell
    (updated in place, at most ten times a second, always at the end of a phase)."""

    def __init__(self, every: float = 0.1):
        self.every = every
        self.phase: str | None = None
        self.handle: Any = None
        self.start = self.last = time.perf_counter()  # the first phase counts from the call's start
        self.updates = 0

    def __call__(self, phase: str, done: int, total: int) -> None:
        from IPython.display import display

        now = time.perf_counter()
        if phase != self.phase:  # a new bar; this phase began when the last one was last updated
            self.phase, self.start = phase, self.last
            self.handle = display(_BarView(phase, done, total, now - self.start), display_id=True)
            self.last = now
            self.updates += 1
            return
        if done < total and now - self.last < self.every:
            return
        self.last = now
        self.updates += 1
        self.handle.update(_BarView(phase, done, total, now - self.start))


def notebook_progress(method: Callable) -> Callable:
    """Decorate a method taking ``progress=``: in a notebook, ``progress=None`` becomes a
    :class:`NotebookBars`; ``progress=False`` becomes None (no progress anywhere)."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        progress = kwargs.get("progress")
        if progress is False:
            kwargs["progress"] = None
        elif progress is None and in_notebook():
            kwargs["progress"] = NotebookBars()
        return method(*args, **kwargs)

    return wrapper


__all__ = [
    "Shown",
    "Picture",
    "drawn_once",
    "to_pil",
    "shape_text",
    "short_list",
    "in_notebook",
    "NotebookBars",
    "notebook_progress",
]
