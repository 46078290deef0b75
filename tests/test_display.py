"""Results in a notebook: short reprs, ``figure()`` and ``_repr_png_`` (the figure ``save`` writes),
one-line errors for figures whose data was not computed, and progress bars under IPython."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import introspect
from introspect.cli import bundled_image_dir
from introspect.core import display
from introspect.errors import IntrospectError
from introspect.images import ImageFolderDataset, Preprocess
from introspect.models import load_model, meta_of
from introspect.training.loop import TrainResult


@pytest.fixture(scope="module")
def bundled():
    torch.manual_seed(0)
    model = load_model(None, None)
    data = ImageFolderDataset(bundled_image_dir(), Preprocess.from_meta(meta_of(model)))
    images = torch.stack([data[i][0] if isinstance(data[i], tuple) else data[i] for i in range(len(data))])
    return model, data, images


def calls(model, data, images):
    """One small call of every bundled method on the bundled model, by method name (``report``: the
    session's report site of the bundled model, ``conftest.report_site``, added by :func:`results`)."""
    labels = torch.arange(len(images)) % 2
    return {
        "attribute": lambda: introspect.attribute(model, images[:2], method="integrated_gradients", n_steps=8),
        # a training run is minutes of work: its result, built as train() returns it, stands in
        "train": lambda: TrainResult("zfnet", {}, ["a", "b"], (3, 32, 32), (0.5,) * 3, (0.5,) * 3,
                                     [{"epoch": 1, "train_acc": 0.5, "val_acc": 0.625}], [], 2.0),
        "project": lambda: introspect.project(model, images[:2], layer="conv5"),
        "top_k": lambda: introspect.top_k(model, data, layer="conv5", k=4, channels=range(6)),
        "occlusion": lambda: introspect.occlusion(model, images[:1], stride=3, layers=["conv5", "conv3"]),
        "correspondence": lambda: introspect.correspondence(model, images[:4], parts={"top": [0, 0, 10, 32],
                                                                             "left": [0, 0, 32, 10]},
                                                            layers=["conv5", "fc7"], random_trials=2),
        "feature_evolution": lambda: introspect.feature_evolution([model, model], data, layers="conv5", maps=3),
        "invariance": lambda: introspect.invariance(model, images[:3], transform="rotate", values=[0, 45, 90]),
        "first_layer_filters": lambda: introspect.first_layer_filters(model, images),
        "feature_generalization": lambda: introspect.feature_generalization(
            model, (images, labels), layers=["conv1", "fc7"], per_class=2, classifiers="softmax", max_iter=20),
    }


@pytest.fixture(scope="module")
def results(bundled, report_site):
    recipes = {**calls(*bundled), "report": lambda: report_site}
    missing = sorted(set(introspect.methods()) - set(recipes))
    assert not missing, f"add a call of {missing} to tests/test_display.py"
    return {name: recipes[name]() for name in introspect.methods()}


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_every_method_has_a_short_repr_without_tensor_contents(results):
    for name, result in results.items():
        text = repr(result)
        lines = text.splitlines()
        assert 1 <= len(lines) <= 5 and len(text) < 800, (name, text)
        assert "tensor(" not in text and "array(" not in text, (name, text)
        assert lines[0].startswith(type(result).__name__ + ":"), (name, text)


def test_headline_numbers_of_the_reprs_are_the_results_own(results):
    occ = results["occlusion"]
    text = repr(occ)
    assert f"{float(occ.clean_prob[occ.targets[0]]):.3f} unoccluded" in text
    assert f"{float(occ.prob[0].min()):.3f} at worst" in text and "conv5 map" in text
    top = results["top_k"]
    assert f"top-4 of 6 conv5 feature maps over {len(bundled_image_dir_files())} images" in repr(top)
    gen = results["feature_generalization"]
    assert f"accuracy {gen.best()['accuracy']:.3f}" in repr(gen)
    assert f"{results['first_layer_filters'].weights.shape[0]} filters" in repr(results["first_layer_filters"])


def bundled_image_dir_files():
    return [p for p in bundled_image_dir().iterdir() if p.suffix == ".png"]


def test_repr_png_is_the_main_figure_that_save_writes(results, tmp_path):
    for name, result in results.items():
        if not result.figure_names():  # a training run: numbers only
            assert result._repr_png_() is None
            continue
        files = [Path(p) for p in result.save(tmp_path / name)]
        main = result.figure_names()[0] + ".png"
        found = [p for p in files if p.as_posix().endswith("/" + main)]
        assert len(found) == 1, (name, main, files)
        shown = pixels(result._repr_png_())
        saved = np.asarray(Image.open(found[0]).convert("RGB"))
        assert shown.shape == saved.shape and np.array_equal(shown, saved), name
        assert shown.std() > 5, name  # a picture, not a blank


def test_figure_gives_pil_images_by_name(results):
    for result in results.values():
        if not result.figure_names():
            with pytest.raises(IntrospectError, match="no figure"):
                result.figure()
            continue
        everything = result.figure()
        names = result.figure_names()
        if len(names) == 1:
            assert isinstance(everything, Image.Image)
        else:
            assert isinstance(everything, dict) and list(everything) == names
            assert all(isinstance(v, Image.Image) for v in everything.values())
        first = result.figure(names[0])
        assert np.array_equal(np.asarray(first), pixels(result._repr_png_()))
    occ = results["occlusion"]
    assert occ.figure("b_activation_conv3.png").size == occ.figure("b_activation_conv3").size
    with pytest.raises(IntrospectError, match="no figure 'b_activation_conv4'.*b_activation_conv5"):
        occ.figure("b_activation_conv4")


def test_a_figure_whose_data_was_not_computed_says_which_option_to_turn_on(bundled):
    model, data, images = bundled
    occ = introspect.occlusion(model, images[:1], stride=4, project=False)
    with pytest.raises(IntrospectError) as info:
        occ.figure("c_projection_conv5")
    assert "project=True" in str(info.value) and "\n" not in str(info.value)
    assert "c_projection_conv5" not in occ.figure() and occ._repr_png_() is not None  # the rest still draws
    ranking = introspect.top_k(model, data, layer="conv5", k=2, channels=[0, 1], project=False)
    with pytest.raises(IntrospectError, match="run top_k with project=True"):
        ranking.figure()
    assert ranking._repr_png_() is None and "ranking only" in repr(ranking)


# --------------------------------------------------------------------------------------------------
# progress in a notebook
# --------------------------------------------------------------------------------------------------
class FakeHandle:
    def __init__(self, shown):
        self.shown = shown

    def update(self, view):
        self.shown.append(view)


@pytest.fixture
def notebook(monkeypatch):
    """Pretend to run in a Jupyter kernel; record what would be displayed."""
    import IPython.display

    shown = []

    def fake_display(view, display_id=False):
        shown.append(view)
        return FakeHandle(shown)

    monkeypatch.setattr(display, "in_notebook", lambda: True)
    monkeypatch.setattr(IPython.display, "display", fake_display)
    return shown


def test_a_notebook_shows_a_bar_that_ends_full(bundled, notebook):
    model, _, images = bundled
    result = introspect.occlusion(model, images[:1], stride=3, project=False)
    positions = result.stats["positions"]
    views = [v for v in notebook if isinstance(v, display._BarView)]
    assert views and views[0].phase == "occlude" and views[0].total == positions
    assert views[-1].done == positions and f"{positions}/{positions}" in repr(views[-1])
    assert "<progress" in views[-1]._repr_html_() and f"value='{positions}'" in views[-1]._repr_html_()


def test_progress_false_or_a_callback_draws_no_bar(bundled, notebook):
    model, _, images = bundled
    introspect.occlusion(model, images[:1], stride=4, project=False, progress=False)
    assert notebook == []
    got = []
    introspect.occlusion(model, images[:1], stride=4, project=False, progress=lambda *a: got.append(a))
    assert notebook == [] and got[-1][1] == got[-1][2] == 49


def test_outside_a_notebook_nothing_is_drawn(bundled, monkeypatch):
    import IPython.display

    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: pytest.fail("displayed outside a notebook"))
    assert not display.in_notebook()
    model, _, images = bundled
    introspect.occlusion(model, images[:1], stride=4, project=False)
