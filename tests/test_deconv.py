"""Deconvnet projections (introspect_deconv.projection): hand-computed cases, captum, both paths."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import introspect
from introspect.core import attach, receptive_field
from introspect.core.attach import same_snapshot, snapshot
from introspect.core.chain import filter_transposed, trace_chain, unpool
from introspect.core.deconvnet import layer_field
from introspect.errors import IntrospectError
from introspect.models import alexnet, zfnet
from introspect_deconv import Projection, project

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning:captum"), pytest.mark.usefixtures("one_thread")]


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# --------------------------------------------------------------------------------------------------
# hand-computed cases
# --------------------------------------------------------------------------------------------------
def test_two_layer_projection_worked_out_by_hand():
    """conv(1->2, 3x3, pad 1) - relu - maxpool 2x2 - conv(2->1, 2x2) - relu on a 6x6 image."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2, 2),
                        nn.Conv2d(2, 1, 2, bias=False), nn.ReLU()).eval()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        net[0].weight.copy_(torch.randn(2, 1, 3, 3, generator=gen))
        net[3].weight.copy_(torch.randn(1, 2, 2, 2, generator=gen))
    x = torch.randn(1, 1, 6, 6, generator=gen)

    # --- the forward pass by hand --------------------------------------------------------------
    img, w1, w2 = x[0, 0].numpy().astype(np.float64), net[0].weight.detach().double().numpy(), \
        net[3].weight.detach().double().numpy()
    padded = np.pad(img, 1)
    a1 = np.zeros((2, 6, 6))
    for c in range(2):
        for y in range(6):
            for x_ in range(6):
                a1[c, y, x_] = max(0.0, float((padded[y:y + 3, x_:x_ + 3] * w1[c, 0]).sum()))
    pooled, switch = np.zeros((2, 3, 3)), {}
    for c in range(2):
        for py in range(3):
            for px in range(3):
                block = a1[c, 2 * py:2 * py + 2, 2 * px:2 * px + 2]
                dy, dx = np.unravel_index(np.argmax(block), block.shape)  # first maximum
                pooled[c, py, px] = block[dy, dx]
                switch[c, py, px] = (2 * py + dy, 2 * px + dx)
    a2 = np.zeros((2, 2))
    for y in range(2):
        for x_ in range(2):
            a2[y, x_] = float((pooled[:, y:y + 2, x_:x_ + 2] * w2[0]).sum())
    oy, ox = np.unravel_index(np.argmax(a2), a2.shape)
    value = max(a2[oy, ox], 0.0)

    # --- the deconvnet by hand: transposed filter, unpool to the switch, rectify, filter --------
    r2 = np.zeros((2, 3, 3))
    for c in range(2):
        for i in range(2):
            for j in range(2):
                r2[c, oy + i, ox + j] += value * w2[0, c, i, j]
    unpooled = np.zeros((2, 6, 6))
    for (c, py, px), (sy, sx) in switch.items():
        unpooled[c, sy, sx] += r2[c, py, px]
    assert (unpooled < 0).any(), "the case must exercise the rectification"
    rectified = np.maximum(unpooled, 0)
    expected = np.zeros((6, 6))
    for c in range(2):
        for y in range(6):
            for x_ in range(6):
                for i in range(3):
                    for j in range(3):
                        yy, xx = y + i - 1, x_ + j - 1
                        if 0 <= yy < 6 and 0 <= xx < 6:
                            expected[yy, xx] += rectified[c, y, x_] * w1[c, 0, i, j]

    for method in ("chain", "autograd"):
        result = project(net, x, layer="3", channels=[0], method=method)
        assert result.method == method
        assert result.position[0].tolist() == [oy, ox]
        assert float(result.activation[0]) == pytest.approx(a2[oy, ox], rel=1e-5)
        np.testing.assert_allclose(result.projections[0, 0].double().numpy(), expected, rtol=1e-4, atol=1e-6)
    without_relu = np.zeros((6, 6))  # the same without rectification differs: the test can fail
    for c in range(2):
        for y in range(6):
            for x_ in range(6):
                for i in range(3):
                    for j in range(3):
                        yy, xx = y + i - 1, x_ + j - 1
                        if 0 <= yy < 6 and 0 <= xx < 6:
                            without_relu[yy, xx] += unpooled[c, y, x_] * w1[c, 0, i, j]
    assert np.abs(without_relu - expected).max() > 1e-3


def test_overlapping_pools_sum_their_contributions():
    """One strong pixel is the switch of all four overlapping 3x3/2 pools: its value is the sum."""
    net = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.ReLU(), nn.MaxPool2d(3, 2),
                        nn.Conv2d(1, 1, 2, bias=False)).eval()
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[3].weight.copy_(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]))
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 1.5
    for method in ("chain", "autograd"):
        result = project(net, x, layer="3", channels=[0], method=method)
        value = float(result.activation[0])
        assert value == pytest.approx(1.5 * 10)
        expected = torch.zeros(5, 5)
        expected[2, 2] = value * (1 + 2 + 3 + 4)  # summed, not overwritten (max_unpool2d would keep one)
        torch.testing.assert_close(result.projections[0, 0], expected)


def test_unpool_and_filter_match_torch_adjoints(monkeypatch):
    """The window operations equal the gradients of max_pool2d and conv2d on the whole map (the
    convolution in each of its forms: fold for few input channels, channel-last rows for small
    batches of windows, ``conv_transpose2d`` above :data:`ROWS_AT_MOST` positions)."""
    import introspect.core.chain as chain_module
    from introspect.core.chain import _make_step

    x = torch.randn(2, 3, 10, 10)  # ceil mode: the last pooling windows reach past the map
    pool = nn.MaxPool2d(3, 2, ceil_mode=True)
    y = pool(x)
    step = _make_step("p", pool, x, y)
    assert y.shape[-1] == 5 and step.window_below((5, 5)) == (11, 11)
    g = torch.randn_like(y)
    (expected,) = torch.autograd.grad(pool(x.requires_grad_()), x, g)
    got, corner = unpool(g, torch.zeros(2, 2, dtype=torch.int64), torch.arange(2), step)
    assert corner.tolist() == [[0, 0], [0, 0]] and got.shape[-2:] == (10, 10)  # cut to the map
    torch.testing.assert_close(got, expected)
    # a window of 2 x 3 pooled units at (1, 2): the unpooled window is 5 x 7 at (2, 4), cut to 5 x 6
    got, corner = unpool(g[:, :, 1:3, 2:5], torch.tensor([[1, 2], [1, 2]]), torch.arange(2), step)
    assert corner.tolist() == [[2, 4], [2, 4]] and got.shape[-2:] == (5, 6)
    part = torch.zeros_like(g)
    part[:, :, 1:3, 2:5] = g[:, :, 1:3, 2:5]
    (expected,) = torch.autograd.grad(pool(x), x, part)
    torch.testing.assert_close(got, expected[:, :, 2:7, 4:10])
    assert expected.abs().sum() == pytest.approx(float(got.abs().sum()))

    for rows_at_most in (chain_module.ROWS_AT_MOST, 0):
        monkeypatch.setattr(chain_module, "ROWS_AT_MOST", rows_at_most)
        for stride, dilation, c_in, kernel in ((2, 1, 3, 3), (1, 2, 20, 3), (2, 1, 20, 3), (1, 1, 20, 3),
                                               (2, 1, 20, (5, 2))):
            conv = nn.Conv2d(c_in, 5, kernel, stride=stride, dilation=dilation)
            inp = torch.randn(2, c_in, 13, 13, requires_grad=True)
            out = conv(inp)
            step = _make_step("c", conv, inp, out)
            g = torch.randn_like(out)
            (expected,) = torch.autograd.grad(out, inp, g)
            got = filter_transposed(g, step)[..., :13, :13]  # the window below, less what the map has not
            h, w = got.shape[-2:]
            torch.testing.assert_close(got, expected[..., :h, :w], rtol=1e-4, atol=1e-5)
            assert expected[..., h:, :].abs().sum() == expected[..., :, w:].abs().sum() == 0  # never read


# --------------------------------------------------------------------------------------------------
# captum's NeuronDeconvolution
# --------------------------------------------------------------------------------------------------
def _captum_check(model, forward, module, x, layer, maps_per_image=2):
    from captum.attr import NeuronDeconvolution

    result = project(model, x, layer=layer, maps=maps_per_image)
    captum = NeuronDeconvolution(forward, module)
    assert len(result) == x.shape[0] * maps_per_image
    for i in range(len(result)):
        n, c = int(result.image_index[i]), int(result.channel[i])
        assert float(result.activation[i]) > 0
        y_, x_ = result.position[i].tolist()
        ref = captum.attribute(x[n:n + 1].clone(), neuron_selector=(c, y_, x_))[0]
        assert cosine(result.projections[i], ref) >= 0.9999
    return result


def test_matches_captum_on_torchvision_vgg11():
    model = torchvision.models.vgg11().eval()
    x = torch.randn(2, 3, 48, 48)
    result = _captum_check(model, model, model.features[13], x, "features.13")
    assert result.method == "chain"
    _captum_check(model, model, model.features[3], x[:1], "features.3", maps_per_image=1)


def test_matches_captum_on_torchvision_resnet18():
    model = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, 48, 48)
    result = _captum_check(model, model, model.layer3, x, "layer3")
    assert result.method == "autograd"
    _captum_check(model, model, model.layer2[1].conv1, x[:1], "layer2.1.conv1", maps_per_image=1)


@pytest.mark.parametrize("build, layer", [(zfnet, "conv5"), (alexnet, "conv5"), (zfnet, "conv2")])
def test_matches_captum_on_bundled_models_without_lrn(build, layer):
    model = build(lrn=False).eval()
    x = torch.randn(2, 3, 96, 96)
    name = model.layer_aliases[layer]
    module = dict(model.named_modules())[name]
    # captum runs model.features: the classifier of the 224x224 model does not take 96x96 inputs
    result = _captum_check(model, model.features, module, x, layer)
    assert result.method == "chain"
    assert any(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))


def test_whole_map_matches_captum_with_the_map_as_seed():
    from captum.attr import NeuronDeconvolution

    model = torchvision.models.vgg11().eval()
    x = torch.randn(1, 3, 64, 64)
    result = project(model, x, layer="features.13", channels=[3, 10], mode="map")
    with attach(model, ["features.13"]) as rec:
        rec.forward(x, stop=True)
    act = rec["features.13"]
    captum = NeuronDeconvolution(model, model.features[13])
    for i, c in enumerate((3, 10)):
        seed = act[0, c].clamp_min(0)
        ref = captum.attribute(x.clone(), neuron_selector=lambda out, s=seed, c=c: (out[:, c] * s).flatten(1).sum(1))
        assert cosine(result.projections[i], ref[0]) >= 0.9999


# --------------------------------------------------------------------------------------------------
# the two paths, normalization layers
# --------------------------------------------------------------------------------------------------
class _DeconvReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp_min(0)


class _Identity(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y):
        return y.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def _reference(features: nn.Sequential, x, last: int, channel: int, lrn_gradient=False):
    """A deconvnet written independently: relu(grad) at ReLUs, LRN passed through on the way down
    (or its true gradient), everything else (conv, pool, BatchNorm) its gradient."""
    x = x.clone().requires_grad_(True)
    h = x
    for module in list(features)[:last + 1]:
        if isinstance(module, nn.ReLU):
            h = _DeconvReLU.apply(h)
        elif isinstance(module, nn.LocalResponseNorm) and not lrn_gradient:
            h = _Identity.apply(h, module(h))
        else:
            h = module(h)
    flat = h[0, channel].flatten()
    pos = int(flat.argmax())
    seed = torch.zeros_like(h)
    seed[0, channel].view(-1)[pos] = flat[pos].detach().clamp_min(0)
    (grad,) = torch.autograd.grad(h, x, seed)
    return grad[0]


def test_lrn_is_passed_through_on_the_way_down():
    torch.manual_seed(1)
    features = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2, padding=2), nn.ReLU(inplace=True),
                             nn.LocalResponseNorm(3, alpha=2.0, beta=0.75, k=1.0), nn.MaxPool2d(3, 2),
                             nn.Conv2d(8, 6, 3, padding=1), nn.ReLU()).eval()
    x = torch.randn(1, 3, 40, 40)
    expected = _reference(features, x, 5, 2)
    true_gradient = _reference(features, x, 5, 2, lrn_gradient=True)
    assert cosine(expected, true_gradient) < 0.999  # the strong LRN makes the choice visible
    for method in ("chain", "autograd"):
        result = project(features, x, layer="5", channels=[2], method=method)
        torch.testing.assert_close(result.projections[0], expected, rtol=1e-4, atol=1e-6)
    assert project(features, x, layer="5", channels=[2]).method == "chain"


def test_batchnorm_is_applied_as_its_transpose():
    torch.manual_seed(2)
    features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                             nn.MaxPool2d(2), nn.Conv2d(8, 6, 3), nn.BatchNorm2d(6), nn.ReLU()).eval()
    with torch.no_grad():
        for bn in (features[1], features[5]):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.2, 3.0)
            bn.weight.normal_()
            bn.bias.normal_()
    x = torch.randn(1, 3, 24, 24)
    expected = _reference(features, x, 6, 4)
    for method in ("chain", "autograd"):
        result = project(features, x, layer="6", channels=[4], method=method)
        torch.testing.assert_close(result.projections[0], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mode", ["max", "map"])
def test_chain_and_autograd_paths_agree(mode):
    model = zfnet(widths=(16, 24, 32, 32, 24)).eval()  # with LRN
    x = torch.randn(3, 3, 96, 96)
    fast = project(model, x, layer="conv5", mode=mode, maps=4, method="chain")
    slow = project(model, x, layer="conv5", mode=mode, maps=4, method="autograd")
    assert fast.method == "chain" and slow.method == "autograd"
    assert torch.equal(fast.channel, slow.channel) and torch.equal(fast.position, slow.position)
    scale = float(slow.projections.abs().max())
    assert scale > 0
    torch.testing.assert_close(fast.projections, slow.projections, rtol=0, atol=1e-5 * scale)


# --------------------------------------------------------------------------------------------------
# choices, geometry, batches, model left as found
# --------------------------------------------------------------------------------------------------
def test_strongest_maps_positions_and_boxes_match_a_plain_forward():
    model = zfnet(widths=(16, 24, 32, 32, 24)).eval()
    x = torch.randn(2, 3, 96, 96)
    result = project(model, x, layer="conv5", maps=5)
    with attach(model, ["conv5"]) as rec:
        rec.forward(x, stop=True)
    act = rec["conv5"]
    field = layer_field(model, "conv5", (3, 96, 96))
    assert field.size == (139, 139)
    for n in range(2):
        maxima = act[n].flatten(1).max(dim=1).values
        order = sorted(range(len(maxima)), key=lambda c: (-float(maxima[c]), c))[:5]
        rows = (result.image_index == n).nonzero().flatten()
        assert result.channel[rows].tolist() == order
        for i in rows.tolist():
            c = int(result.channel[i])
            y, x_ = result.position[i].tolist()
            assert float(act[n, c, y, x_]) == float(maxima[c]) == float(result.activation[i])
            assert result.boxes[i].tolist() == list(field.receptive_box(y, x_, (96, 96)))
            y0, x0, y1, x1 = result.boxes[i].tolist()
            inside = result.projections[i, :, y0:y1, x0:x1].abs().sum()
            assert inside > 0 and result.projections[i].abs().sum() == pytest.approx(float(inside))


def test_receptive_field_matches_the_core_and_the_paper():
    model = zfnet().eval()
    assert layer_field(model, "conv5", (3, 224, 224)) == receptive_field(model, "conv5", (3, 224, 224))
    assert layer_field(model, "conv5", (3, 224, 224)).size == (139, 139)


def test_every_image_of_a_batch_gets_its_own_result():
    model = torchvision.models.resnet18().eval()
    x = torch.randn(3, 3, 32, 32)
    batched = project(model, x, layer="layer2", maps=2, batch_size=2)
    assert batched.image_index.tolist() == [0, 0, 1, 1, 2, 2]
    for n in range(3):
        alone = project(model, x[n], layer="layer2", maps=2)
        rows = batched.image_index == n
        assert torch.equal(alone.channel, batched.channel[rows])
        torch.testing.assert_close(alone.projections, batched.projections[rows], rtol=1e-4, atol=1e-6)


def test_walk_in_many_small_batches_gives_the_same_projections(monkeypatch):
    """Memory reused from batch to batch of windows (unpooling buffers, matrix products) must not
    leak values from one batch into the next."""
    import introspect.core.deconvnet as deconvnet

    model = zfnet(widths=(16, 24, 32, 32, 24)).eval()
    x = torch.randn(2, 3, 96, 96)
    one_batch = project(model, x, layer="conv5", maps=6, method="chain")
    monkeypatch.setattr(deconvnet, "CHAIN_BUDGET", 1)  # one window per walk
    many = project(model, x, layer="conv5", maps=6, method="chain")
    torch.testing.assert_close(many.projections, one_batch.projections, rtol=1e-5, atol=1e-9)
    assert one_batch.projections.abs().sum() > 0


def test_walk_of_windows_cut_differently_equals_walks_one_by_one():
    """Windows at different positions (cut differently at the borders) walked in one batch take the
    masking route; each equals its own walk (which is cut by slicing)."""
    model = zfnet(widths=(8, 8, 8, 8, 8)).eval()
    x = torch.randn(2, 3, 96, 96)
    chain = trace_chain(model, x, model.features[12])
    assert [s.kind for s in chain.steps].count("pool") == 2
    h, w = chain.activations.shape[-2:]
    positions = torch.tensor([[0, 0], [h - 1, 2], [2, w - 1], [h // 2, w // 2]])
    images = torch.tensor([0, 1, 0, 1])
    top = torch.zeros(4, 8, 1, 1)
    top[torch.arange(4), torch.tensor([1, 2, 3, 4]), 0, 0] = torch.tensor([1.0, 2.0, 0.5, 1.5])
    together, corners = chain.walk(top.clone(), positions.clone(), images)
    for i in range(4):
        alone, corner = chain.walk(top[i:i + 1].clone(), positions[i:i + 1].clone(), images[i:i + 1])
        dense_a = torch.zeros(3, 96, 96)
        dense_b = torch.zeros(3, 96, 96)
        pairs = ((dense_a, together[i], corners[i].tolist()), (dense_b, alone[0], corner[0].tolist()))
        for dense, win, (cy, cx) in pairs:
            y0, x0 = max(cy, 0), max(cx, 0)
            y1, x1 = min(cy + win.shape[-2], 96), min(cx + win.shape[-1], 96)
            dense[:, y0:y1, x0:x1] = win[:, y0 - cy:y1 - cy, x0 - cx:x1 - cx]
        assert dense_b.abs().sum() > 0
        torch.testing.assert_close(dense_a, dense_b)


def test_chain_detection():
    x = torch.randn(1, 3, 32, 32)
    vgg = torchvision.models.vgg11().eval()
    chain = trace_chain(vgg, x, vgg.features[13])
    assert chain is not None and [s.kind for s in chain.steps][:3] == ["conv", "relu", "pool"]
    resnet = torchvision.models.resnet18().eval()
    assert trace_chain(resnet, x, resnet.layer1) is None            # residual sums

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)

        def forward(self, x):
            return self.b(F.relu(self.a(x)))

    class InPlaceBetween(Functional):
        def forward(self, x):
            h = self.a(x)
            h.mul_(2)
            return self.b(h)

    for cls in (Functional, InPlaceBetween):
        model = cls().eval()
        assert trace_chain(model, x, model.b) is None
        result = project(model, x, layer="b", channels=[0])
        assert result.method == "autograd"
    with pytest.raises(IntrospectError, match="autograd"):
        project(resnet, x, layer="layer1", method="chain")


def test_model_is_left_as_found_and_runs_in_eval_mode():
    model = zfnet(widths=(16, 24, 32, 32, 24))
    model.train()
    model.classifier.eval()  # mixed flags must come back as they were
    before = snapshot(model)
    x = torch.randn(1, 3, 96, 96)
    first = project(model, x, layer="conv5", maps=2)
    second = project(model.eval(), x, layer="conv5", maps=2)
    model.train()
    model.classifier.eval()
    assert same_snapshot(before, snapshot(model))
    torch.testing.assert_close(first.projections, second.projections)
    resnet = torchvision.models.resnet18().eval()
    before = snapshot(resnet)
    project(resnet, torch.randn(1, 3, 64, 64), layer="layer2", maps=1)
    assert same_snapshot(before, snapshot(resnet))


def test_fully_connected_units_project_through_the_whole_image():
    model = zfnet(widths=(16, 24, 32, 32, 24), fc=32, pool5_size=2, num_classes=5).eval()
    x = torch.randn(1, 3, 96, 96)
    result = project(model, x, layer="fc8", channels=[1, 3])
    assert result.method == "autograd" and result.projections.shape == (2, 3, 96, 96)
    assert result.boxes.tolist() == [[0, 0, 96, 96]] * 2


def test_user_errors_are_one_line_introspect_errors():
    model = zfnet(widths=(16, 24, 32, 32, 24)).eval()
    x = torch.randn(1, 3, 96, 96)
    with pytest.raises(IntrospectError, match="mode"):
        project(model, x, layer="conv5", mode="mean")
    with pytest.raises(IntrospectError, match="0..23"):
        project(model, x, layer="conv5", channels=[24])
    with pytest.raises(IntrospectError, match="unknown layer"):
        project(model, x, layer="conv9")
    with pytest.raises(IntrospectError, match="N x C x H x W"):
        project(model, torch.randn(96, 96), layer="conv5")


def test_registered_as_introspect_methods_and_result_roundtrip(tmp_path):
    assert introspect.project is project
    assert introspect.methods()["top_k"].plugin == "deconv"
    model = zfnet(widths=(16, 24, 32, 32, 24)).eval()
    x = torch.randn(2, 3, 96, 96)
    result = introspect.project(model, x, layer="conv5", channels=[1, 2])
    assert isinstance(result, Projection) and len(result) == 4
    files = result.save(tmp_path / "out")
    names = sorted(p.name for p in files)
    assert names == ["conv5.npy", "conv5.png", "input.npy", "result.json"]
    array = np.load(tmp_path / "out" / "conv5.npy")
    assert array.dtype == np.float32 and array.shape == (4, 3, 96, 96)
    np.testing.assert_array_equal(array, result.projections.numpy())
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "input.npy"), x.numpy())
    doc = result.to_dict()
    assert doc["layer"] == "features.12" and doc["name"] == "conv5"
    assert [r["channel"] for r in doc["projections"]] == [1, 2, 1, 2]
