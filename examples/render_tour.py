"""Run ``examples/tour.ipynb`` on a fresh kernel, render it to HTML and take a screenshot of it.

    python examples/render_tour.py [SCREENSHOT.png]     # default: examples/figures/notebook_tour.png

The kernel is the Python running this script (its kernelspec is written to a temporary folder), so
the notebook runs against the introspect installed here. ``tests/test_notebook.py`` calls the same
functions; the README's screenshot comes from here.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "tour.ipynb"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


@contextlib.contextmanager
def _jupyter_path(first: Path):
    """``JUPYTER_PATH`` with ``first`` in front, for the block."""
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(first), old]))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = old


def execute(path: Path = NOTEBOOK, timeout: int = 300, workdir: Path | None = None):
    """Run every cell of the notebook at ``path`` on a new ``python3`` kernel of this interpreter;
    returns ``(notebook with outputs, seconds)``. A cell error raises ``nbclient``'s
    ``CellExecutionError``."""
    import nbformat
    from ipykernel.kernelspec import install
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as prefix:
        install(prefix=prefix, kernel_name="python3")  # argv: this sys.executable
        with _jupyter_path(Path(prefix) / "share" / "jupyter"):
            client = NotebookClient(nb, kernel_name="python3", timeout=timeout,
                                    resources={"metadata": {"path": str(workdir or path.parent)}})
            start = time.perf_counter()
            client.execute()
            return nb, time.perf_counter() - start


def to_html(nb, out: Path) -> Path:
    """The executed notebook as a standalone HTML page (``nbconvert``'s classic template)."""
    from nbconvert import HTMLExporter

    # nbconvert's templates live beside the interpreter that installed it (a venv built with
    # --system-site-packages sees the package but not the base interpreter's templates)
    with _jupyter_path(Path(sys.base_prefix) / "share" / "jupyter"):
        body, _ = HTMLExporter(template_name="classic").from_notebook_node(nb)
    out.write_text(body, encoding="utf-8")
    return out


def chromium() -> str | None:
    """The headless browser, if one is installed."""
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def screenshot(html: Path, png: Path, size: tuple[int, int] = (1100, 2600)) -> Path:
    """A PNG of the top ``size`` of ``html`` in headless Chromium."""
    browser = chromium()
    if browser is None:
        raise RuntimeError("no chromium found; install it (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                        f"--screenshot={png.resolve()}", html.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
    return png


def main(png: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        nb, seconds = execute(workdir=Path(tmp))
        html = to_html(nb, Path(tmp) / "tour.html")
        screenshot(html, png, size=(1000, 2300))
    from PIL import Image

    Image.open(png).convert("RGB").quantize(128).save(png, optimize=True)  # a lighter file for the README
    print(f"executed in {seconds:.1f} s; screenshot {png}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "figures" / "notebook_tour.png")
