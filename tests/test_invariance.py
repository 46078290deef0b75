"""``introspect.invariance`` (Fig. 5) against brute force: every image transformed by hand (slicing,
``torch.rot90``, upsample-and-crop, torchvision's rotate), run through the model one at a time, the
distances and the softmax computed here."""
from __future__ import annotations

import json

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import nn
from torchvision.transforms import InterpolationMode

import introspect
from introspect.cli import bundled_image_dir
from introspect.errors import IntrospectError
from introspect.images import Preprocess, load_images
from introspect.models import load_model
from introspect_invariance.method import default_layers, invariance
from introspect_invariance.transforms import default_values, transform_images


@pytest.fixture(scope="module")
def bundled():
    model = load_model(None)
    paths = sorted(bundled_image_dir().glob("*.png"))[:3]
    return model, load_images(paths, Preprocess.from_meta(model.introspect_meta))


def by_hand(model, images, modules):
    """Features (flattened per image, float64) of ``modules`` and the softmax, from plain forward hooks."""
    seen = {}
    handles = [m.register_forward_hook(lambda mod, i, o, k=k: seen.__setitem__(k, o.detach().clone()))
               for k, m in enumerate(modules)]
    try:
        with torch.no_grad():
            probs = torch.softmax(model(images), 1)
    finally:
        for h in handles:
            h.remove()
    return [[seen[k][n].reshape(-1).double() for k in range(len(modules))] for n in range(len(images))], probs


def shift_rows(x, t, fill):
    """``x`` (C x H x W) moved ``t`` rows down (up for t < 0), uncovered rows set to ``fill`` (C,)."""
    out = fill.view(-1, 1, 1).expand_as(x).clone()
    if t >= 0:
        out[:, t:] = x[:, :x.shape[1] - t]
    else:
        out[:, :t] = x[:, -t:]
    return out


def check_against(model, x, result, transformed, layers):
    """``transformed[n][v]`` is image n under value v; compare distance, prob and label with ``result``."""
    clean, _ = by_hand(model, x, layers)
    for n in range(x.shape[0]):
        feats, prob = by_hand(model, torch.stack(transformed[n]), layers)
        target = result.targets[n]
        for v in range(len(transformed[n])):
            for k in range(len(layers)):
                want = float((feats[v][k] - clean[n][k]).norm())
                assert result.distance[n, v, k].item() == pytest.approx(want, rel=1e-4, abs=1e-4)
            assert result.prob[n, v].item() == pytest.approx(float(prob[v, target]), abs=1e-5)
            if float(prob[v].topk(2).values.diff().abs()) > 1e-4:
                assert int(result.label[n, v]) == int(prob[v].argmax())


def test_integer_translations_match_slicing_and_padding(bundled):
    model, x = bundled
    values = [-6, -3, -1, 0, 2, 5]
    result = invariance(model, x, transform="translate", values=values, batch_size=5)
    assert result.layers == ["features.0", "classifier.4"] and result.aliases == ["conv1", "fc7"]
    assert result.distance.shape == (3, 6, 2) and result.prob.shape == (3, 6) and result.label.shape == (3, 6)
    mean_fill = torch.zeros(3)
    transformed = [[shift_rows(img, t, mean_fill) for t in values] for img in x]
    check_against(model, x, result, transformed, [model.features[0], model.classifier[4]])
    # default targets are the top classes of the untransformed images
    with torch.no_grad():
        top = model(x).argmax(1).tolist()
    assert result.targets == top and not result.targets_given


def test_black_fill_translation(bundled):
    model, x = bundled
    meta = model.introspect_meta
    black = (0 - torch.tensor(meta.mean)) / torch.tensor(meta.std)
    result = invariance(model, x[:2], transform="translate", values=[-4, 7], fill="zero", layers=["conv2"])
    transformed = [[shift_rows(img, t, black) for t in (-4, 7)] for img in x[:2]]
    check_against(model, x[:2], result, transformed, [model.features[4]])


def test_quarter_turns_match_rot90(bundled):
    model, x = bundled
    result = invariance(model, x, transform="rotate", values=[0, 90, 180, 270, 360], targets="Bag")
    transformed = [[torch.rot90(img, k, (-2, -1)) for k in range(5)] for img in x]
    check_against(model, x, result, transformed, [model.features[0], model.classifier[4]])
    assert result.target_names == ["Bag"] * 3 and result.targets_given
    assert (result.distance[:, [0, 4]] == 0).all()  # 0 and 360 degrees are the image itself


def test_any_angle_matches_torchvision_rotate(bundled):
    model, x = bundled
    angles = [15.0, 45.0, 200.0]
    result = invariance(model, x[:2], transform="rotate", values=angles)
    # torchvision without fill pads with zeros, i.e. the normalization mean: the default fill
    transformed = [[TF.rotate(img, a, interpolation=InterpolationMode.BILINEAR) for a in angles] for img in x[:2]]
    check_against(model, x[:2], result, transformed, [model.features[0], model.classifier[4]])


def test_scale_two_is_upsampling_and_centre_crop(bundled):
    model, x = bundled
    result = invariance(model, x, transform="scale", values=[1.0, 2.0], targets=[0, "Dress", "bag"])
    big = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)[:, :, 16:48, 16:48]
    transformed = [[img, big[n]] for n, img in enumerate(x)]
    check_against(model, x, result, transformed, [model.features[0], model.classifier[4]])
    assert result.targets == [0, 3, 8]


def test_distance_is_exactly_zero_at_identity_whether_or_not_it_is_in_values(bundled):
    model, x = bundled
    for transform, identity in (("translate", 0.0), ("scale", 1.0), ("rotate", 0.0)):
        only = invariance(model, x, transform=transform, values=[identity])
        assert (only.distance == 0).all()
        assert torch.equal(transform_images(x, transform, [identity] * 3), x)
    with_identity = invariance(model, x, transform="translate", values=[-2, 0, 3])
    without = invariance(model, x, transform="translate", values=[-2, 3])
    torch.testing.assert_close(with_identity.distance[:, [0, 2]], without.distance)
    assert (with_identity.distance[:, 1] == 0).all() and (without.distance > 0).all()
    # the probability at the identity is that of the untransformed image
    torch.testing.assert_close(with_identity.prob[:, 1], with_identity.clean_prob)


def test_conv1_distance_grows_with_translation_on_photos(tiny_checkpoint):
    model = load_model(tiny_checkpoint)
    pre = Preprocess.from_meta(model.introspect_meta)
    x = torch.stack([pre(Image.fromarray(getattr(skimage.data, name)())) for name in ("chelsea", "astronaut")])
    shifts = [0, 1, 2, 4, 8, 16]
    down = invariance(model, x, transform="translate", values=shifts, layers="conv1").distance[..., 0]
    up = invariance(model, x, transform="translate", values=[-s for s in shifts], layers="conv1").distance[..., 0]
    for curve in (*down, *up):
        assert (curve.diff() > 0).all(), curve


def test_batches_give_the_same_curves_and_the_model_is_left_as_found(bundled):
    model, x = bundled
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    try:
        one = invariance(model, x, transform="rotate", values=[0, 30, 60], batch_size=1)
        assert all(m.training for m in model.modules())
    finally:
        model.eval()
    many = invariance(model, x, transform="rotate", values=[0, 30, 60], batch_size=64)
    torch.testing.assert_close(one.distance, many.distance, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(one.prob, many.prob, rtol=1e-5, atol=1e-5)
    assert one.stats["passes"] == 1 + 6 and many.stats["passes"] == 2
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.features[0]._forward_hooks


def test_relative_distance_and_summary(bundled):
    model, x = bundled
    result = invariance(model, x, transform="translate", values=[-4, 0, 9], names=["a", "b", "c"])
    clean, _ = by_hand(model, x, [model.features[0], model.classifier[4]])
    norm = torch.tensor([[float(f.norm()) for f in feats] for feats in clean], dtype=torch.float64)
    torch.testing.assert_close(result.norm, norm)
    torch.testing.assert_close(result.relative_distance, result.distance / norm[:, None])
    summary = result.to_dict()
    assert summary["farthest_value"] == 9.0 and summary["nearest_value"] == -4.0
    assert summary["values"] == [-4.0, 0.0, 9.0]
    assert summary["layers"][0]["mean_relative_distance"][1] == 0.0
    assert summary["layers"][1]["mean_relative_distance_at_farthest"] == pytest.approx(
        float((result.distance[:, 2, 1] / norm[:, 1]).mean()))
    assert [i["name"] for i in summary["images"]] == ["a", "b", "c"]
    rows = result.rows()
    assert len(rows) == 9 and rows[5]["image"] == "b" and rows[5]["value"] == 9.0
    assert rows[5]["distance_conv1"] == float(result.distance[1, 2, 0])


def test_nearest_and_farthest_values(bundled):
    model, x = bundled
    turn = invariance(model, x[:1], transform="rotate", values=[0, 90, 180, 350], layers="conv1")
    assert (turn.nearest, turn.farthest) == (3, 2)  # 350 degrees is 10 from a full turn
    zoom = invariance(model, x[:1], transform="scale", values=[0.5, 1.0, 1.25, 1.8], layers="conv1")
    assert (zoom.nearest, zoom.farthest) == (2, 0)  # |log 0.5| > |log 1.8|


def test_default_values_scale_the_paper_ranges():
    assert default_values("translate", (224, 224)).tolist() == list(range(-60, 61, 10))
    assert default_values("translate", (32, 32)).tolist() == list(range(-9, 10))
    np.testing.assert_allclose(default_values("scale", (32, 32)).numpy(), np.arange(10, 19) / 10)
    assert default_values("rotate", (224, 224)).tolist() == list(range(0, 361, 10))


def test_default_layers_rule(bundled):
    model, _ = bundled
    assert default_layers(model) == ["features.0", "classifier.4"]
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(),
                          nn.Linear(4 * 28 * 28, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    assert default_layers(plain) == ["0", "6"]
    one_linear = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(IntrospectError, match="pass --layer"):
        default_layers(one_linear)
    result = invariance(plain, torch.randn(2, 3, 32, 32), transform="translate", values=[0, 2])
    assert result.layers == ["0", "6"] and result.aliases == [None, None]


def test_registered_as_an_introspect_method():
    assert introspect.invariance is invariance
    assert "invariance" in introspect.methods()


@pytest.mark.parametrize("kwargs, message", [
    ({"transform": "shear"}, "unknown transform 'shear'"),
    ({"values": []}, "values is empty"),
    ({"transform": "scale", "values": [1.0, -0.5]}, "scale factors must be positive"),
    ({"values": [0, float("nan")]}, "finite"),
    ({"layers": ["conv9"]}, "unknown layer 'conv9'"),
    ({"targets": [0, 1]}, "got 2 targets for 3 images"),
    ({"targets": ["Cat"]}, "unknown target class 'Cat'"),
    ({"targets": 10}, "out of range"),
    ({"fill": "noise"}, "unknown fill"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"names": ["a"]}, "got 1 names for 3 images"),
])
def test_bad_arguments_raise_one_line_errors(bundled, kwargs, message):
    model, x = bundled
    with pytest.raises(IntrospectError, match=message) as info:
        invariance(model, x, **{"values": [0, 2], **kwargs})
    assert "\n" not in str(info.value)


def test_only_identity_values_still_save_every_file(bundled, tmp_path):
    model, x = bundled
    result = invariance(model, x[:2], transform="rotate", values=[0, 360], layers="conv1")
    files = {p.name for p in result.save(tmp_path / "out")}
    assert {"figure.png", "distance_conv1.png", "probability.png", "result.json", "values.npy"} <= files
    listed = json.loads((tmp_path / "out" / "result.json").read_text())["files"]
    assert set(listed) == files and all(listed.values())  # every file written is listed and described
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "values.npy"), [0, 360])
    assert (np.load(tmp_path / "out" / "distance.npy") == 0).all()
    empty = x[:0]
    assert transform_images(empty, "translate", []).shape == empty.shape


def test_plots_of_unsorted_values_equal_those_of_sorted_values(bundled):
    from introspect_invariance.figure import distance_plot, probability_plot

    model, x = bundled
    mixed = invariance(model, x[:2], transform="translate", values=[4, -4, 0, 2], layers="conv1")
    ordered = invariance(model, x[:2], transform="translate", values=[-4, 0, 2, 4], layers="conv1")
    np.testing.assert_array_equal(distance_plot(mixed, 0), distance_plot(ordered, 0))
    np.testing.assert_array_equal(probability_plot(mixed), probability_plot(ordered))
    assert mixed.values.tolist() == [4, -4, 0, 2]  # the result keeps the order given


def test_grayscale_model_without_metadata_and_numpy_targets():
    torch.manual_seed(0)
    gray = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 8), nn.ReLU(),
                         nn.Linear(8, 3)).eval()
    x = torch.randn(2, 1, 16, 16)
    values = [-3, 0, 2]
    result = invariance(gray, x, transform="translate", values=values, targets=np.array([2, 1]))
    assert result.layers == ["0", "3"] and result.targets == [2, 1] and result.targets_given
    transformed = [[shift_rows(img, t, torch.zeros(1)) for t in values] for img in x]
    check_against(gray, x, result, transformed, [gray[0], gray[3]])
    assert invariance(gray, x, transform="translate", values=[1], targets=np.int64(1)).targets == [1, 1]
