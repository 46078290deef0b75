"""Correspondence analysis (Sec. 4.3, Table 1): the measure by hand and by its properties, the API
against an independent loop over pairs, the parts formats and every input error."""
from __future__ import annotations

import itertools
import json
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import conftest
import introspect
from introspect.core.attach import same_snapshot, snapshot
from introspect.errors import IntrospectError
from introspect.images import Preprocess, load_images
from introspect.occluders import fill_image, occlude
from introspect_correspondence import (
    boxes_per_image,
    correspondence,
    default_layers,
    delta,
    hamming_matrix,
    load_parts,
    normalized_hamming,
    pair_stats,
    sign_pattern,
)

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)  # gray (0.5) is not the mean: fills differ


def tiny_zfnet(dtype=torch.float64):
    """A ZFNet-shaped model for 64 x 64 inputs (conv5: 8 x 3 x 3, fc7: 8 units), float64."""
    model = conftest.small_zfnet(widths=[4, 8, 8, 8, 8], fc=8, dtype=dtype)
    model.introspect_meta = introspect.ModelMeta(arch="zfnet", input_size=(3, 64, 64), mean=MEAN, std=STD)
    return model


def images(n=4, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 64, 64, generator=g).to(dtype)


PARTS = {"eye": [10, 12, 22, 26], "nose": [[30, 28, 40, 36], [31, 27, 41, 35], [29, 30, 39, 38], [30, 29, 40, 37]]}


# --------------------------------------------------------------------------------------------------
# the measure
# --------------------------------------------------------------------------------------------------
def test_hand_computed_case():
    eps = torch.tensor([[1.0, -1.0, 0.0, 2.0], [1.0, 1.0, 0.0, -3.0], [-1.0, -1.0, 0.0, 2.0]])
    # signs: [+ - 0 +], [+ + 0 -], [- - 0 +]: H(0,1) = 2, H(0,2) = 1, H(1,2) = 3
    counts = hamming_matrix(sign_pattern(eps))
    assert counts.tolist() == [[0, 2, 1], [2, 0, 3], [1, 3, 0]]
    matrix = normalized_hamming(eps)
    assert torch.allclose(matrix, torch.tensor([[0, .5, .25], [.5, 0, .75], [.25, .75, 0]], dtype=torch.float64))
    mean, std = pair_stats(matrix)
    assert mean == pytest.approx(0.5)
    assert std == pytest.approx(np.sqrt((0.0 ** 2 + 0.25 ** 2 + 0.25 ** 2) / 3))
    assert delta(eps) == 12  # 2 * (2 + 1 + 3): ordered pairs
    assert delta(eps) / (3 * 2 * 4) == pytest.approx(mean)  # Delta / (N (N-1) D) is the table's mean


def test_zero_counts_as_its_own_sign_and_tolerance_zeroes_rounding():
    eps = torch.tensor([[1e-9, 0.5], [0.0, 0.5]])
    assert hamming_matrix(sign_pattern(eps)).tolist() == [[0, 1], [1, 0]]
    assert hamming_matrix(sign_pattern(eps, tol=1e-6, scale=1.0)).tolist() == [[0, 0], [0, 0]]
    assert sign_pattern(torch.tensor([[-2e-9, -0.1]]), tol=1e-6, scale=1.0).tolist() == [[0, -1]]


def test_delta_is_zero_when_all_changes_share_one_sign_pattern():
    g = torch.Generator().manual_seed(0)
    pattern = torch.randint(-1, 2, (50,), generator=g).double()
    eps = pattern * (torch.rand(6, 50, generator=g).double() + 0.1)  # different magnitudes, same signs
    assert delta(eps) == 0
    assert normalized_hamming(eps).abs().max().item() == 0.0
    assert pair_stats(normalized_hamming(eps)) == (0.0, 0.0)


def test_symmetric_in_the_pair_and_permutes_with_the_images():
    eps = torch.randn(5, 40, generator=torch.Generator().manual_seed(3))
    m = normalized_hamming(eps)
    assert torch.equal(m, m.T) and torch.equal(torch.diagonal(m), torch.zeros(5, dtype=torch.float64))
    perm = torch.tensor([3, 0, 4, 1, 2])
    assert torch.equal(normalized_hamming(eps[perm]), m[perm][:, perm])


def test_invariant_to_positive_scaling_of_eps():
    g = torch.Generator().manual_seed(4)
    eps = torch.randn(5, 40, generator=g)
    eps[:, :8] = 0
    scales = torch.rand(5, 1, generator=g) * 100 + 1e-3  # a different positive factor per image
    assert torch.equal(normalized_hamming(eps * scales), normalized_hamming(eps))
    base = eps.abs().amax(1, keepdim=True)
    assert torch.equal(normalized_hamming(eps * scales, 0.3, base * scales), normalized_hamming(eps, 0.3, base))
    assert normalized_hamming(eps).max() > 0.3  # not a trivially constant case


def test_batched_matrices_equal_one_at_a_time():
    signs = torch.randint(-1, 2, (3, 4, 30), generator=torch.Generator().manual_seed(5), dtype=torch.int8)
    batched = hamming_matrix(signs)
    for t in range(3):
        assert torch.equal(batched[t], hamming_matrix(signs[t]))
    mean, std = pair_stats(batched.double())
    pooled = np.concatenate([batched[t].numpy()[np.triu_indices(4, 1)] for t in range(3)]).astype(float)
    assert mean == pytest.approx(pooled.mean()) and std == pytest.approx(pooled.std())


# --------------------------------------------------------------------------------------------------
# the API against an independent loop
# --------------------------------------------------------------------------------------------------
def reference_features(model, x, module_names):
    """Each named module's output per image, one image per forward pass, cloned in the hook (so an
    in-place ReLU after it cannot change it): name -> N x D."""
    modules = dict(model.named_modules())
    rows = {name: [] for name in module_names}
    handles = [modules[name].register_forward_hook(
        lambda m, i, o, name=name: rows[name].append(o.detach().clone().reshape(-1))) for name in module_names]
    try:
        with torch.no_grad():
            for k in range(len(x)):
                model(x[k:k + 1])
    finally:
        for h in handles:
            h.remove()
    return {name: torch.stack(r) for name, r in rows.items()}


def reference_pairs(model, x, clean, boxes, tol, fill="gray"):
    """name -> per-pair normalized Hamming distances, by a plain loop over image pairs (numpy)."""
    fills = fill_image(x, fill, MEAN, STD)
    occluded = torch.stack([occlude(x[i], tuple(boxes[i]), fills[i]) for i in range(len(x))])
    masked = reference_features(model, occluded, list(clean))
    out = {}
    for name in clean:
        eps = (clean[name] - masked[name]).numpy()
        limit = tol * clean[name].abs().amax(1).numpy()
        signs = [np.where(np.abs(e) <= lim, 0, np.sign(e)) for e, lim in zip(eps, limit)]
        n, d = len(x), eps.shape[1]
        m = np.zeros((n, n))
        for i, j in itertools.product(range(n), range(n)):
            if i != j:
                m[i, j] = sum(1 for a, b in zip(signs[i], signs[j]) if a != b) / d
        out[name] = m
    return out


def test_api_matches_a_loop_over_pairs():
    model, x = tiny_zfnet(), images()
    layers = ["conv5", "relu5", "fc7", "relu7"]
    before = snapshot(model)
    result = introspect.correspondence(model, x, parts=PARTS, layers=layers, random_trials=2, seed=7, batch_size=4)
    assert same_snapshot(before, snapshot(model))
    assert result.layers == layers and result.parts == ["eye", "nose"] and result.rows == ["eye", "nose", "random"]
    assert result.layer_names == ["features.12", "features.13", "classifier.4", "classifier.5"]
    clean = reference_features(model, x, result.layer_names)
    refs = {part: reference_pairs(model, x, clean, result.boxes[part].tolist(), result.tol) for part in result.parts}
    random_refs = {part: [reference_pairs(model, x, clean, result.random_boxes[part][t].tolist(), result.tol)
                          for t in range(2)] for part in result.parts}
    for layer, name in zip(layers, result.layer_names):
        for part in result.parts:
            expected = refs[part][name]
            assert np.allclose(result.pairs[part][layer].numpy(), expected)
            values = expected[np.triu_indices(4, 1)]
            assert result.mean[part][layer] == pytest.approx(values.mean())
            assert result.std[part][layer] == pytest.approx(values.std())
            assert result.delta[part][layer] == pytest.approx(expected.sum() * result.feature_size[layer])
        pooled = []
        for part in result.parts:
            for t in range(2):
                expected = random_refs[part][t][name]
                assert np.allclose(result.random_pairs[part][layer][t].numpy(), expected)
                pooled.append(expected[np.triu_indices(4, 1)])
        pooled = np.concatenate(pooled)
        assert result.mean["random"][layer] == pytest.approx(pooled.mean())
        assert result.std["random"][layer] == pytest.approx(pooled.std())
    # before the in-place ReLU every conv5 unit changes (it sees the whole input); after it many stay 0
    assert not np.allclose(result.pairs["eye"]["conv5"].numpy(), result.pairs["eye"]["relu5"].numpy())
    assert (clean["features.12"] < 0).any() and (clean["features.13"] >= 0).all()


def test_random_boxes_have_the_part_size_are_inside_and_follow_the_seed():
    model, x = tiny_zfnet(), images()
    a = introspect.correspondence(model, x, parts=PARTS, layers=["relu5"], random_trials=6, seed=3)
    b = introspect.correspondence(model, x, parts=PARTS, layers=["relu5"], random_trials=6, seed=3)
    c = introspect.correspondence(model, x, parts=PARTS, layers=["relu5"], random_trials=6, seed=4)
    for part in a.parts:
        rb, pb = a.random_boxes[part], a.boxes[part]
        assert rb.shape == (6, 4, 4)
        assert torch.equal(rb[..., 2] - rb[..., 0], (pb[:, 2] - pb[:, 0]).expand(6, 4))
        assert torch.equal(rb[..., 3] - rb[..., 1], (pb[:, 3] - pb[:, 1]).expand(6, 4))
        assert rb[..., :2].min() >= 0 and rb[..., 2].max() <= 64 and rb[..., 3].max() <= 64
        assert torch.equal(rb, b.random_boxes[part]) and not torch.equal(rb, c.random_boxes[part])
    assert a.mean == b.mean


def test_eval_mode_is_used_and_flags_restored():
    model, x = tiny_zfnet(), images()
    expected = introspect.correspondence(model, x, parts=PARTS, layers=["relu7"], random_trials=0)
    model.train()
    got = introspect.correspondence(model, x, parts=PARTS, layers=["relu7"], random_trials=0)
    assert got.mean == expected.mean  # dropout off during the analysis
    assert all(m.training for m in model.modules())


def test_registered_as_a_method():
    assert introspect.methods()["correspondence"].func is correspondence
    assert introspect.correspondence is correspondence


def test_default_layers():
    assert default_layers(introspect.zfnet(num_classes=2)) == ["relu5", "relu7"]
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                        nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
    assert default_layers(net) == ["3", "7"]
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    assert default_layers(plain) == ["0"]
    x = torch.randn(3, 3, 10, 10)
    result = correspondence(net, x, parts={"p": [2, 2, 5, 5]}, random_trials=2, mean=(0, 0, 0), std=(1, 1, 1))
    assert result.layers == ["3", "7"] and result.feature_size == {"3": 4 * 6 * 6, "7": 8}


def test_files_api_maps_boxes_through_the_preprocessing(tmp_path):
    model = tiny_zfnet(torch.float32)
    rng = np.random.default_rng(0)
    paths = []
    for k, (w, h) in enumerate([(80, 64), (64, 96), (128, 128)]):
        path = tmp_path / f"img{k}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    # in each image's own pixels: 80x64 -> resize 80x64 (short side 64), crop columns 8..72
    parts = {"p": {"img0.png": [10, 20, 30, 40], "img1.png": [32, 10, 48, 30], "img2.png": [20, 40, 60, 80]}}
    result = introspect.correspondence(model, paths, parts=parts, layers=["relu5"], random_trials=2)
    pre = Preprocess.from_meta(introspect.meta_of(model))
    assert torch.equal(result.input, load_images(paths, pre))
    # img0: scale 1, offset (0, 8); img1: scale 1, offset (16, 0); img2: scale 0.5, offset (0, 0)
    assert result.boxes["p"].tolist() == [[10, 12, 30, 32], [16, 10, 32, 30], [10, 20, 30, 40]]
    assert result.image_names == ["img0.png", "img1.png", "img2.png"]
    same = introspect.correspondence(model, result.input, parts={"p": result.boxes["p"].tolist()}, layers=["relu5"],
                                     random_trials=2)
    assert same.pairs["p"]["relu5"].tolist() == result.pairs["p"]["relu5"].tolist()


# --------------------------------------------------------------------------------------------------
# parts formats
# --------------------------------------------------------------------------------------------------
def test_parts_formats():
    names = ["dir/a.png", "dir/b.jpg"]
    box = (1.0, 2.0, 3.0, 4.0)
    assert boxes_per_image({"p": [1, 2, 3, 4]}, names) == {"p": [box, box]}
    assert boxes_per_image({"p": {"y0": 1, "x0": 2, "y1": 3, "x1": 4}}, names) == {"p": [box, box]}
    assert boxes_per_image({"p": [[1, 2, 3, 4], {"y0": 5, "x0": 6, "y1": 7, "x1": 8}]}, names) == \
        {"p": [box, (5.0, 6.0, 7.0, 8.0)]}
    assert boxes_per_image({"p": {"b.jpg": [5, 6, 7, 8], "a": [1, 2, 3, 4]}}, names) == \
        {"p": [box, (5.0, 6.0, 7.0, 8.0)]}
    assert boxes_per_image({"p": torch.tensor([[1, 2, 3, 4], [1, 2, 3, 4]])}, names) == {"p": [box, box]}


def test_parts_file_json_and_yaml(tmp_path, monkeypatch):
    spec = {"left_eye": [6, 13, 10, 18], "nose": [[9, 8, 15, 13], [9, 8, 15, 14]]}
    (tmp_path / "parts.json").write_text(json.dumps(spec))
    assert load_parts(tmp_path / "parts.json") == spec
    (tmp_path / "parts.yaml").write_text("left_eye: [6, 13, 10, 18]\n")
    monkeypatch.setitem(sys.modules, "yaml", None)  # PyYAML absent: a clear error
    with pytest.raises(IntrospectError, match="PyYAML is not installed; write it as JSON"):
        load_parts(tmp_path / "parts.yaml")
    fake = types.ModuleType("yaml")
    fake.safe_load = lambda text: {"left_eye": [6, 13, 10, 18]} if "left_eye" in text else None
    monkeypatch.setitem(sys.modules, "yaml", fake)
    assert load_parts(tmp_path / "parts.yaml") == {"left_eye": [6, 13, 10, 18]}


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("parts, message", [
    ({"p": [10, 10, 70, 20]}, "lies outside the model input"),
    ({"p": [-1, 10, 20, 20]}, "lies outside the model input"),
    ({"p": [10, 10, 10, 20]}, "is empty"),
    ({"p": [10, 30, 20, 20]}, "is empty"),
    ({"p": [[1, 2, 3, 4]] * 3}, "has 3 boxes for 4 images"),
    ({"p": [[1, 2, 3, 4], None, [1, 2, 3, 4], [1, 2, 3, 4]]}, "has no box"),
    ({"p": {"image 0": [1, 2, 3, 4], "image 1": [1, 2, 3, 4], "image 2": [1, 2, 3, 4]}},
     "part 'p' is missing for image 'image 3'"),
    ({"p": {"image 7": [1, 2, 3, 4]}}, "has a box for image 'image 7', which was not given"),
    ({"p": [1, 2, 3]}, "has 3 boxes for 4 images"),
    ({"p": {"y0": 1, "x0": 2, "y1": 3}}, "needs exactly the keys y0, x0, y1, x1"),
    ({"p": "nose"}, "is not a box specification"),
    ({"random": [1, 2, 3, 4]}, "reserved"),
    ({}, "no parts given"),
])
def test_bad_parts_are_one_line_errors(parts, message):
    with pytest.raises(IntrospectError, match=message) as info:
        correspondence(tiny_zfnet(), images(), parts=parts, layers=["relu5"])
    assert "\n" not in str(info.value)


def test_other_errors():
    model = tiny_zfnet()
    with pytest.raises(IntrospectError, match="compares pairs of images but got 1"):
        correspondence(model, images(1), parts={"p": [1, 2, 3, 4]})
    with pytest.raises(IntrospectError, match="N x C x H x W"):
        correspondence(model, images()[0], parts={"p": [1, 2, 3, 4]})
    with pytest.raises(IntrospectError, match="unknown layer 'relu9'"):
        correspondence(model, images(), parts={"p": [1, 2, 3, 4]}, layers=["relu9"])
    with pytest.raises(IntrospectError, match="unknown fill"):
        correspondence(model, images(), parts={"p": [1, 2, 3, 4]}, fill="pink")
    with pytest.raises(IntrospectError, match=r"cannot run on images of shape \(1, 64, 64\)"):
        correspondence(model, images()[:, :1], parts={"p": [1, 2, 3, 4]}, layers=["relu5"], mean=(0.5,), std=(0.25,))
    with pytest.raises(IntrospectError, match="random_trials"):
        correspondence(model, images(), parts={"p": [1, 2, 3, 4]}, random_trials=-1)


def test_file_errors(tmp_path):
    model = tiny_zfnet(torch.float32)
    for k in range(2):
        Image.new("RGB", (64, 48), (k * 80, 20, 30)).save(tmp_path / f"i{k}.png")
    paths = [tmp_path / "i0.png", tmp_path / "i1.png"]
    with pytest.raises(IntrospectError, match=r"part 'p' of image 'i1.png': box \[40, 0, 50, 10\] lies outside "
                                              r"the image \(height 48, width 64\)"):
        correspondence(model, paths, parts={"p": [[1, 20, 3, 24], [40, 0, 50, 10]]})
    # 64x48 -> 85x64 after the resize, crop columns 10..74: columns 0..5 of the image are cut away
    with pytest.raises(IntrospectError, match="falls outside the model's center crop"):
        correspondence(model, paths, parts={"p": [10, 0, 20, 5]})
    with pytest.raises(IntrospectError, match="compares pairs of images but got 1"):
        correspondence(model, paths[:1], parts={"p": [1, 2, 3, 4]})
    (tmp_path / "bad.json").write_text("{nose: [1, 2")
    with pytest.raises(IntrospectError, match="not valid JSON"):
        correspondence(model, paths, parts=tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[[1, 2, 3, 4]]")
    with pytest.raises(IntrospectError, match="must map part names to boxes"):
        load_parts(tmp_path / "list.json")
    with pytest.raises(IntrospectError, match="does not exist"):
        load_parts(tmp_path / "missing.json")


def test_a_list_of_image_tensors_is_stacked():
    model, x = tiny_zfnet(), images(3)
    parts = {"p": [5, 5, 30, 30]}
    stacked = correspondence(model, x, parts=parts, layers=["relu5"], random_trials=2)
    listed = correspondence(model, [x[k:k + 1] for k in range(3)], parts=parts, layers=["relu5"], random_trials=2)
    assert listed.mean == stacked.mean and torch.equal(listed.input, stacked.input)
