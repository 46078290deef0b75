"""``examples/tour.ipynb``: saved without outputs, run on a fresh kernel of this interpreter (any
cell error fails), every result shown with its figure and progress bars, rendered to HTML and
screenshotted in headless Chromium (as the README's picture is made)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
#: CI time bound for the whole notebook (about 40 s on two busy cores, most of it importing torch)
TIME_LIMIT = 300


def render_tour():
    spec = importlib.util.spec_from_file_location("render_tour", EXAMPLES / "render_tour.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    nb, seconds = render_tour().execute(workdir=tmp_path_factory.mktemp("tour"), timeout=TIME_LIMIT)
    return nb, seconds


def test_the_notebook_is_saved_without_outputs():
    nb = nbformat.read(EXAMPLES / "tour.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert nb.metadata.kernelspec.name == "python3"


def test_the_tour_runs_on_a_fresh_kernel_and_shows_every_figure(executed):
    nb, seconds = executed
    assert seconds < TIME_LIMIT
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors
    text = {i: "".join(o.get("text", "") for o in c.outputs if o.output_type == "stream") for i, c in enumerate(code)}
    pngs = {i: [o.data["image/png"] for o in c.outputs if "image/png" in o.get("data", {})] for i, c in enumerate(code)}
    # project, top_k, occlusion, one panel, correspondence: a figure each, the summaries printed
    for i, head in [(1, "Projection: 9 deconvnet projections of conv5"), (2, "TopK: top-9 of 8 conv5 feature maps"),
                    (3, "OcclusionResult: 26 x 26 occluder positions"), (5, "Mean feature sign change")]:
        assert head in text[i], (i, text[i])
    for i in (1, 2, 3, 4, 5):
        assert len(pngs[i]) == 1, i
    # progress bars drawn in place and ending full (top_k: mine and project; occlusion: 676 positions)
    bars = [o.data["text/plain"] for c in code for o in c.outputs
            if o.output_type == "display_data" and "<progress" in o.data.get("text/html", "")]
    assert any(b.startswith("mine ") and "10/10" in b for b in bars)
    assert any(b.startswith("occlude ") and "676/676" in b for b in bars)


def test_the_rendered_notebook_screenshot(executed, tmp_path):
    tour = render_tour()
    if tour.chromium() is None:
        pytest.skip("no chromium on this machine (apt-get install chromium; .ci/run installs it)")
    html = tour.to_html(executed[0], tmp_path / "tour.html")
    assert html.read_text().count("<img") >= 5
    png = tour.screenshot(html, tmp_path / "tour.png", size=(1000, 1400))
    picture = np.asarray(Image.open(png).convert("RGB"))
    assert picture.shape[:2] == (1400, 1000) and picture.std() > 20  # text and figures, not a blank page
