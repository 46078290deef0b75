"""``introspect.occlusion``: every map against a brute-force loop, captum's ``Occlusion``, a
hand-written deconvnet projection and a FLOP counter; arguments, fallbacks and files."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import introspect
from introspect.core import attach
from introspect.core.attach import same_snapshot, snapshot
from introspect.errors import IntrospectError
from introspect.models import ModelMeta, zfnet
from introspect.occluders import fill_image, occlude
from introspect_occlusion.method import default_geometry, occlusion


def small_zfnet(classes=None):
    torch.manual_seed(0)
    model = zfnet(num_classes=6, widths=(16, 32, 32, 32, 16), fc=32, pool5_size=1).eval()
    model.introspect_meta = ModelMeta(arch="zfnet", classes=classes, input_size=(3, 64, 64),
                                      mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    return model


@pytest.fixture(scope="module")
def model():
    return small_zfnet(["shirt", "trouser", "pullover", "dress", "coat", "sandal"])


@pytest.fixture(scope="module")
def image():
    torch.manual_seed(1)
    return torch.randn(1, 3, 64, 64)


def brute_force(model, x, size, stride, fill, layer=None, channel=None, rectify=True):
    """Occlude, forward, softmax: one position at a time; the total of ``max(0, map)`` (``rectify``)
    or of the map itself."""
    probs, maps = brute_force_maps(model, x, size, stride, fill, layer, channel)
    if layer is None:
        return probs, maps
    return probs, (maps.clamp(min=0) if rectify else maps).sum((-2, -1))


def brute_force_maps(model, x, size, stride, fill, layer=None, channel=None):
    """Occlude, forward, softmax: one position at a time; the probabilities and ``layer``'s map
    ``channel`` at every position (positions down x across x the map's height x width)."""
    meta = model.introspect_meta
    values = fill_image(x, fill, meta.mean, meta.std)
    probs, maps = [], []
    for y in range(0, x.shape[2] - size + 1, stride):
        row_p, row_m = [], []
        for x0 in range(0, x.shape[3] - size + 1, stride):
            occluded = occlude(x, (y, x0, y + size, x0 + size), values)
            with torch.no_grad(), attach(model, [layer] if layer else []) as rec:
                row_p.append(torch.softmax(rec.forward(occluded), 1)[0])
            if layer is not None:
                row_m.append(rec[layer][0, channel])
        probs.append(torch.stack(row_p))
        maps.append(torch.stack(row_m) if row_m else torch.zeros(0))
    return torch.stack(probs), torch.stack(maps)


# --------------------------------------------------------------------------------------------------
# independent references
# --------------------------------------------------------------------------------------------------
def test_probability_label_and_activation_maps_equal_a_brute_force_loop(model, image):
    result = occlusion(model, image, size=14, stride=10, targets=[2, "coat"], layers=["conv5"], batch_size=16)
    assert result.layers == ["features.12"] and result.aliases == ["conv5"]
    probs, totals = brute_force(model, image, 14, 10, "gray", "conv5", result.channels[0])
    assert result.prob.shape == (2, 6, 6) and result.targets == [2, 4]
    torch.testing.assert_close(result.prob[0], probs[..., 2], rtol=0, atol=1e-5)
    torch.testing.assert_close(result.prob[1], probs[..., 4], rtol=0, atol=1e-5)
    assert torch.equal(result.label, probs.argmax(-1))
    torch.testing.assert_close(result.label_prob, probs.max(-1).values, rtol=0, atol=1e-5)
    torch.testing.assert_close(result.activation[0].double(), totals.double(), rtol=1e-4,
                               atol=1e-4 * float(totals.abs().max()))
    # the channel is the strongest feature map of the clean image (largest single activation)
    with attach(model, ["conv5"]) as rec:
        rec.forward(image, stop=True)
    clean = rec["conv5"][0]
    assert result.channels[0] == int(clean.flatten(1).max(1).values.argmax())
    assert float(result.clean_activation[0]) == pytest.approx(float(clean[result.channels[0]].clamp(min=0).sum()),
                                                              rel=1e-5)
    assert result.mode == "incremental" and result.stats["work_fraction"] < 1 and result.rectified


@pytest.mark.parametrize("incremental", [True, False])
def test_panel_b_sums_the_rectified_map_by_default_and_the_pre_activation_on_request(model, image, incremental):
    # a map that is negative in most places (the strongest maps of this model are positive everywhere)
    kwargs = dict(size=14, stride=10, layers=["conv2"], channels=[3], project=False, incremental=incremental)
    rectified = occlusion(model, image, **kwargs)
    raw = occlusion(model, image, rectify=False, **kwargs)
    channel = rectified.channels[0]
    _, maps = brute_force_maps(model, image, 14, 10, "gray", "conv2", channel)  # one loop, both totals
    relu_totals, raw_totals = maps.clamp(min=0).sum((-2, -1)), maps.sum((-2, -1))
    assert bool((relu_totals > raw_totals + 1e-3).all())  # the map has negative parts: the two really differ
    torch.testing.assert_close(rectified.activation[0].double(), relu_totals.double(), rtol=1e-4,
                               atol=1e-4 * float(relu_totals.abs().max()))
    torch.testing.assert_close(raw.activation[0].double(), raw_totals.double(), rtol=1e-4,
                               atol=1e-4 * float(raw_totals.abs().max()))
    assert rectified.to_dict()["total"] == "rectified" and raw.to_dict()["total"] == "pre-activation"
    from introspect_occlusion.figure import activation_title, panel_names

    assert activation_title(rectified, 0) == f"(b) conv2 map {channel}\ntotal rectified activation"
    assert activation_title(raw, 0) == f"(b) conv2 map {channel}\ntotal pre-ReLU activation"
    assert "pre-activation" in panel_names(raw)["b_activation_conv2.png"]


@pytest.mark.parametrize("fill", ["zero", "mean", "blur"])
def test_every_fill_equals_brute_force(model, image, fill):
    result = occlusion(model, image, size=20, stride=11, fill=fill, targets=[0], project=False)
    probs, _ = brute_force(model, image, 20, 11, fill)
    torch.testing.assert_close(result.prob[0], probs[..., 0], rtol=0, atol=1e-5)


def test_captum_occlusion_is_reproduced_from_the_map(model, image):
    from captum.attr import Occlusion

    size, stride, target = 14, 5, 3  # (64 - 14) is a multiple of 5: captum's windows are ours
    result = occlusion(model, image, size=size, stride=stride, targets=[target], project=False)
    meta = model.introspect_meta
    baseline = fill_image(image, "gray", meta.mean, meta.std)
    captum = Occlusion(lambda x: torch.softmax(model(x), 1)).attribute(
        image, sliding_window_shapes=(3, size, size), strides=(3, stride, stride), baselines=baseline,
        target=target, perturbations_per_eval=32)
    # ours: the drop from the clean probability, averaged over the windows covering each pixel
    drop = float(result.clean_prob[target]) - result.prob[0].double()
    total = torch.zeros(64, 64, dtype=torch.float64)
    count = torch.zeros(64, 64, dtype=torch.float64)
    for i, y in enumerate(result.ys.tolist()):
        for j, x0 in enumerate(result.xs.tolist()):
            total[y:y + size, x0:x0 + size] += drop[i, j]
            count[y:y + size, x0:x0 + size] += 1
    ours = (total / count).float()
    for c in range(3):
        torch.testing.assert_close(captum[0, c], ours, rtol=0, atol=1e-4)


def test_projection_is_the_deconvnet_written_out():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(5)
            self.c1 = nn.Conv2d(3, 4, 3)
            self.relu = nn.ReLU(inplace=True)
            self.pool = nn.MaxPool2d(2)
            self.c2 = nn.Conv2d(4, 5, 3)
            self.fc = nn.Linear(5 * 5 * 5, 3)

        def forward(self, x):
            h = self.c2(self.pool(self.relu(self.c1(x))))
            return self.fc(torch.flatten(F.relu(h), 1))

    net = Net().eval()
    x = torch.randn(1, 3, 16, 16)
    result = occlusion(net, x, size=4, stride=4, layers=["c2"])
    c = result.channels[0]
    with torch.no_grad():  # by hand: rectify, transposed filters, unpool with the switches, rectify, ...
        a1 = F.relu(net.c1(x))
        p, switches = F.max_pool2d(a1, 2, return_indices=True)
        fmap = net.c2(p)
        seed = torch.zeros_like(fmap)
        seed[:, c] = fmap[:, c].clamp(min=0)
        g = F.conv_transpose2d(seed, net.c2.weight)
        g = F.max_unpool2d(g, switches, 2, output_size=a1.shape[-2:])
        g = F.relu(g)
        expected = F.conv_transpose2d(g, net.c1.weight)
    torch.testing.assert_close(result.projection[0], expected[0], rtol=1e-5, atol=1e-6)


def test_work_count_matches_a_flop_counter(model, image):
    from torch.utils.flop_counter import FlopCounterMode

    result = occlusion(model, image, size=14, stride=5, project=False)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(image)
    flops = sum(counter.get_flop_counts()["Global"].values())  # convolutions and matrix products
    assert flops > 0
    assert result.stats["macs_full"] == result.stats["positions"] * flops // 2
    assert 0 < result.stats["macs_incremental"] < result.stats["macs_full"]


# --------------------------------------------------------------------------------------------------
# behaviour
# --------------------------------------------------------------------------------------------------
def test_positions_follow_the_documented_rule_and_defaults_scale_with_the_input(model, image):
    assert default_geometry((224, 224)) == (50, 10)
    assert default_geometry((64, 64)) == (14, 3)
    result = occlusion(model, image, size=(20, 30), stride=(7, 9), project=False)
    assert result.ys.tolist() == [0, 7, 14, 21, 28, 35, 42]  # 42 + 20 <= 64, 49 + 20 > 64
    assert result.xs.tolist() == [0, 9, 18, 27]  # 27 + 30 <= 64, 36 + 30 > 64
    assert result.prob.shape == (1, 7, 4)
    default = occlusion(model, image, project=False)
    assert default.size == (14, 14) and default.stride == (3, 3) and default.prob.shape == (1, 17, 17)
    assert default.targets == [int(default.clean_prob.argmax())]
    assert default.layers == ["features.12"]  # the last convolutional layer


def test_batch_size_and_whole_passes_give_the_same_maps(model, image):
    # stride 12: 5 x 5 overlapping positions, batches of 7 across rows and a last one of 4
    a = occlusion(model, image, size=16, stride=12, targets=[1, 5], layers=["conv3", "pool2"], batch_size=1)
    b = occlusion(model, image, size=16, stride=12, targets=[1, 5], layers=["conv3", "pool2"], batch_size=7)
    c = occlusion(model, image, size=16, stride=12, targets=[1, 5], layers=["conv3", "pool2"], incremental=False)
    assert c.mode == "full" and a.prob.shape[-2:] == (5, 5)
    for other in (b, c):
        torch.testing.assert_close(other.prob, a.prob, rtol=0, atol=1e-6)
        torch.testing.assert_close(other.activation, a.activation, rtol=1e-4, atol=1e-4)
        assert torch.equal(other.label, a.label)


def test_approximate_mode_reports_its_error(model, image):
    exact = occlusion(model, image, size=14, stride=5, project=False)
    approx = occlusion(model, image, size=14, stride=5, approximate=0.3, check_positions=121, project=False)
    assert approx.mode == "approximate" and approx.tau == 0.3
    err = approx.approx_error
    assert err["checked_positions"] == 121
    assert err["prob_max_abs"] == pytest.approx(float((approx.prob - exact.prob).abs().max()), abs=1e-6)
    assert err["label_agreement"] == pytest.approx(float((approx.label == exact.label).float().mean()))
    assert approx.stats["macs_incremental"] < exact.stats["macs_incremental"]


def test_untraceable_model_runs_whole_passes_and_stays_exact(image):
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(2)
            self.conv = nn.Conv2d(3, 4, 5, stride=2)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            h = F.relu(self.conv(x))
            if h.mean() > -1:  # data-dependent control flow
                h = h * 2
            return self.fc(h.mean((2, 3)))

    net = Branchy().eval()
    result = occlusion(net, image, size=16, stride=12, layers=["conv"])
    assert result.mode == "full" and result.fallback.startswith("TraceError")
    ys = range(0, 64 - 16 + 1, 12)
    fill = fill_image(image, "gray")
    expected = torch.tensor(
        [
            [
                torch.softmax(net(occlude(image, (y, x, y + 16, x + 16), fill)), 1)[0, result.targets[0]].item()
                for x in ys
            ]
            for y in ys
        ]
    )
    torch.testing.assert_close(result.prob[0], expected, rtol=0, atol=1e-5)


def test_eval_mode_is_used_training_flags_restored_and_the_model_left_as_found(image):
    net = small_zfnet()
    net.train()
    net.features[3].eval()  # a mixed state must come back as it was
    before = snapshot(net)
    result = occlusion(net, image, size=20, stride=22)
    assert same_snapshot(before, snapshot(net))
    net.eval()
    probs, _ = brute_force(net, image, 20, 22, "gray")
    torch.testing.assert_close(result.prob[0], probs[..., result.targets[0]], rtol=0, atol=1e-5)


def test_registered_as_a_method(model, image):
    assert "occlusion" in introspect.methods()
    result = introspect.occlusion(model, image, size=32, stride=32, project=False)
    assert result.prob.shape == (1, 2, 2)
    assert "Returns" in introspect.occlusion.__doc__


def test_bad_arguments_are_one_line_errors(model, image):
    cases = [
        (dict(size=65), "larger than"),
        (dict(targets=["cot"]), "did you mean 'coat'"),
        (dict(targets=[6]), "out of range"),
        (dict(fill="pink"), "unknown fill"),
        (dict(layers=["conv9"]), "unknown layer"),
        (dict(approximate=1.5), "(0, 1]"),
        (dict(batch_size=0), "batch_size"),
        (dict(channels=[999]), "out of range"),
    ]
    for kwargs, message in cases:
        with pytest.raises(IntrospectError, match=message.replace("(", r"\(").replace("]", r"\]")):
            occlusion(model, image, **kwargs)
    with pytest.raises(IntrospectError, match="one image"):
        occlusion(model, image.repeat(2, 1, 1, 1))
    with pytest.raises(IntrospectError, match="no class names"):
        occlusion(small_zfnet(), image, targets=["coat"])


def test_save_writes_every_panel_and_array(model, image, tmp_path):
    result = occlusion(model, image, size=14, stride=5, targets=["dress", 0], layers=["conv5", "conv4"])
    files = {p.name for p in result.save(tmp_path / "out")}
    # one array per quantity, layers by their paper names, every file listed in result.json
    assert files == {"prob.npy", "label.npy", "label_prob.npy", "activation.npy", "input.npy", "projection.npy",
                     "result.json", "a_input.png", "b_activation_conv5.png", "b_activation_conv4.png",
                     "c_projection_conv5.png", "c_projection_conv4.png", "d_prob_dress.png", "d_prob_shirt.png",
                     "e_label.png", "figure.png"}
    out = tmp_path / "out"
    np.testing.assert_allclose(np.load(out / "prob.npy"), result.prob.numpy())
    assert np.load(out / "prob.npy").shape == (2, 11, 11)
    assert np.load(out / "label.npy").dtype == np.int64
    np.testing.assert_allclose(np.load(out / "label_prob.npy"), result.label_prob.numpy())
    np.testing.assert_array_equal(np.load(out / "input.npy"), image.numpy())
    np.testing.assert_allclose(np.load(out / "activation.npy"), result.activation.numpy())
    assert np.load(out / "activation.npy").shape == (2, 11, 11)
    summary = json.loads((out / "result.json").read_text())
    assert set(summary["files"]) == files and all(summary["files"].values())
    assert summary["targets"][0]["name"] == "dress" and summary["positions"] == [11, 11]
    assert [(l["name"], l["module"], l["alias"]) for l in summary["layers"]] == [
        ("conv5", "features.12", "conv5"), ("conv4", "features.10", "conv4")]
    assert summary["total"] == "rectified"
    figure = np.asarray(Image.open(out / "figure.png"))
    assert figure.shape[1] > 5 * 224 and figure.std() > 10  # five panels of a readable size


def test_a_container_layer_whose_last_traced_op_is_not_its_output_is_still_read_exactly(image):
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 6, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            self.last_mean = y.mean()  # traced after y: the block's last node is not its output
            return y

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(7)
            self.stem = nn.Conv2d(3, 4, 5, stride=2)
            self.block = Block()
            self.fc = nn.Linear(6, 4)

        def forward(self, x):
            return self.fc(F.relu(self.block(F.relu(self.stem(x)))).mean((2, 3)))

    net = Net().eval()
    result = occlusion(net, image, size=16, stride=16, layers=["block"], channels=[2], project=False)
    assert result.mode == "incremental"
    fill = fill_image(image, "gray")
    for iy, y in enumerate(result.ys.tolist()):
        for ix, x0 in enumerate(result.xs.tolist()):
            with attach(net, ["block"]) as rec, torch.no_grad():
                rec.forward(occlude(image, (y, x0, y + 16, x0 + 16), fill))
            assert float(result.activation[0, iy, ix]) == pytest.approx(
                float(rec["block"][0, 2].clamp(min=0).sum()), rel=1e-4, abs=1e-5
            )


def test_default_batch_size_follows_the_memory_budget(model, image, monkeypatch):
    import introspect.core.sweep
    from introspect.core.incremental import IncrementalModel, Sweep

    ys = torch.arange(0, 64 - 14 + 1, 5)
    engine = IncrementalModel(model, image)
    per_position = engine.bytes_per_position(engine.plan(Sweep(ys.repeat_interleave(11), ys.repeat(11), (14, 14))))
    monkeypatch.setattr(introspect.core.sweep, "AUTO_BATCH_BYTES", 5 * per_position + 1)
    result = occlusion(model, image, size=14, stride=5, project=False)
    assert result.stats["batch_size"] == 5
    one = occlusion(model, image, size=14, stride=5, project=False, batch_size=121)
    torch.testing.assert_close(result.prob, one.prob, rtol=0, atol=1e-6)
    auto = introspect.core.sweep.auto_batch_size
    assert auto(None, 10 ** 4) == 64 and auto(1, 10 ** 6) == 512
    # at most a 16th of the sweep per batch (not below 8 positions), so that progress moves
    assert auto(1, 324) == 21 and auto(None, 1000) == 63 and auto(1, 100) == 8 and auto(1, 5) == 5


def test_progress_moves_during_a_multi_second_sweep():
    """Progress is reported at least 16 times during the sweep, and no wait between two updates is a
    large part of the run (before, one batch held almost every position: 0 %, then 98 %)."""
    import time

    torch.manual_seed(0)
    model = zfnet(num_classes=10, widths=(16, 32, 48, 48, 32), fc=64, pool5_size=3).eval()
    model.introspect_meta = ModelMeta(arch="zfnet", input_size=(3, 128, 128))
    x = torch.randn(1, 3, 128, 128)
    # every forward pass takes at least 0.1 s, so the sweep lasts seconds on any machine
    slow = model.register_forward_pre_hook(lambda module, args: time.sleep(0.1))
    calls = []
    start = time.perf_counter()
    try:
        result = occlusion(model, x, size=24, stride=8, project=False, incremental=False,
                           progress=lambda phase, done, total: calls.append((time.perf_counter(), done)))
    finally:
        slow.remove()
    total = time.perf_counter() - start
    positions = result.stats["positions"]
    assert positions == 196 and calls[-1][1] == positions and total > 1.0, total
    assert len(calls) >= 16
    times = [start] + [t for t, _ in calls]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # equal steps of at most a 16th of the sweep; in time, no wait is a large part of the run (the
    # clean pass and the tracing come before the first update; a loose bound: the machine may be busy)
    batch = result.stats["batch_size"]
    steps = [b - a for a, b in zip([0] + [d for _, d in calls], [d for _, d in calls])]
    assert batch * 16 >= positions and steps[:-1] == [batch] * (len(calls) - 1)
    assert max(gaps[1:]) < total / 3


def test_mean_and_blur_fills_need_no_matching_normalization():
    """A grey (1-channel) image with the default 3-channel ImageNet statistics: only the fills that
    are defined through the normalization (gray, zero) refuse it."""
    from introspect.occluders import gaussian_blur

    x = torch.randn(2, 1, 12, 12)
    assert torch.equal(fill_image(x, "mean"), torch.zeros_like(x))
    assert torch.equal(fill_image(x, "blur", blur_sigma=2.0), gaussian_blur(x, 2.0))
    for kind in ("gray", "zero"):
        with pytest.raises(IntrospectError, match="normalization has 3 channels"):
            fill_image(x, kind)
    assert torch.allclose(fill_image(x, "zero", (0.5,), (0.25,)), torch.full_like(x, -2.0))
