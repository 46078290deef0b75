"""Incremental inference against full forward passes of the occluded images, on the paper's
ZFNet and AlexNet (LRN), torchvision's VGG11 and ResNet18, and models with functional, unusual and
unsupported operations."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from introspect.core.incremental import IncrementalModel, Sweep, local_response_norm
from introspect.models import alexnet, zfnet


def grid_sweep(hw, size, stride):
    ys = torch.arange(0, hw[0] - size + 1, stride)
    xs = torch.arange(0, hw[1] - size + 1, stride)
    return Sweep(ys.repeat_interleave(len(xs)), xs.repeat(len(ys)), (size, size))


def occluded_batch(x, fill, sweep):
    """The occluded images, built one by one (the reference input)."""
    out = x.repeat(len(sweep.ys), 1, 1, 1)
    h, w = sweep.box
    for i, (y, x0) in enumerate(zip(sweep.ys.tolist(), sweep.xs.tolist())):
        out[i, :, y:y + h, x0:x0 + w] = fill[0, :, y:y + h, x0:x0 + w]
    return out


def run_incremental(model, x, fill, sweep, batch_size, layers=(), tau=None, precompute=True):
    engine = IncrementalModel(model, x, list(layers))
    steps = engine.plan(sweep, tau, batch_size if precompute else None)
    outs, states = [], {name: [] for name in layers}

    def readout(name, state, batch):
        states[name].append(state.full(batch))

    with torch.no_grad():
        for a in range(0, len(sweep.ys), batch_size):
            outs.append(engine.run(steps, fill, a, min(a + batch_size, len(sweep.ys)), readout))
    return engine, steps, torch.cat(outs), {k: torch.cat(v) for k, v in states.items()}


def assert_equal_to_full_run(model, hw, size, stride, batch_size, layers=(), seed=0, channels=3,
                             precompute=True):
    torch.manual_seed(seed)
    x = torch.randn(1, channels, *hw)
    fill = torch.randn(1, channels, *hw)  # a different value at every pixel: any misplaced pixel shows
    sweep = grid_sweep(hw, size, stride)
    engine, steps, out, maps = run_incremental(model, x, fill, sweep, batch_size, layers, precompute=precompute)
    batch = occluded_batch(x, fill, sweep)
    with torch.no_grad():
        ref = model(batch)
    scale = float(ref.abs().max())
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * scale)
    for name in layers:  # every requested layer's whole map, also equal
        module = dict(model.named_modules())[name]
        got = []
        handle = module.register_forward_hook(lambda m, i, o, got=got: got.append(o.clone()))
        try:
            with torch.no_grad():
                model(batch)
        finally:
            handle.remove()
        torch.testing.assert_close(maps[name], got[-1], rtol=1e-4, atol=1e-4 * float(got[-1].abs().max()))
    return engine, steps


def randomize_batchnorm(model):
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model


def kinds(steps):
    return {k: sum(1 for s in steps.values() if s.kind == k) for k in ("const", "clean", "win", "full")}


# --------------------------------------------------------------------------------------------------
# the four networks of the issue
# --------------------------------------------------------------------------------------------------
def test_zfnet_small_input_is_exact_and_incremental():
    torch.manual_seed(0)
    model = zfnet(num_classes=10, widths=(16, 32, 32, 32, 16), fc=64, pool5_size=1).eval()
    engine, steps = assert_equal_to_full_run(model, (64, 64), 14, 5, 32, layers=["features.12", "features.3"])
    # every layer up to pool5 runs on windows; conv1's window is a small part of its map
    conv1 = next(n for n in steps if n.target == "features.0")
    assert steps[conv1].kind == "win" and steps[conv1].window.area < 0.25 * 30 * 30
    assert kinds(steps)["win"] == 16 and kinds(steps)["full"] >= 1


def test_zfnet_at_the_papers_size():
    torch.manual_seed(0)
    model = zfnet(num_classes=10, fc=256).eval()  # the paper's convolutional layers at 224 x 224
    _, steps = assert_equal_to_full_run(model, (224, 224), 50, 58, 8)
    windows = {n.target: s.window.hw for n, s in steps.items() if n.op == "call_module" and s.kind == "win"}
    assert windows["features.0"] == (28, 28)  # a 50-pixel occluder changes 28 x 28 of conv1's 110 x 110
    assert windows["features.12"][0] < 13  # conv5 is not entirely recomputed


def test_alexnet_with_local_response_normalization():
    torch.manual_seed(0)
    model = alexnet(num_classes=10).eval()
    model.classifier = nn.Sequential(nn.Linear(256, 10))  # the paper's features; a small head
    assert isinstance(model.features[2], nn.LocalResponseNorm)
    assert_equal_to_full_run(model, (67, 67), 16, 17, 8, layers=["features.2", "features.12"])


def test_vgg11_with_adaptive_pooling_to_another_size():
    torch.manual_seed(0)
    model = torchvision.models.vgg11(num_classes=10).eval()
    model.classifier = nn.Sequential(nn.Flatten(), nn.Linear(512 * 49, 10))
    engine, steps = assert_equal_to_full_run(model, (64, 64), 16, 16, 8, layers=["features.13"])
    avgpool = next(n for n in steps if n.target == "avgpool")
    assert steps[avgpool].kind == "full"  # 2x2 -> 7x7: the rest of the network runs on whole maps


def test_resnet18_residual_sums_batchnorm_downsampling():
    model = randomize_batchnorm(torchvision.models.resnet18(num_classes=10).eval())
    engine, steps = assert_equal_to_full_run(model, (64, 64), 16, 24, 4, precompute=False,
                                             layers=["layer1.0.conv2", "layer2.0.downsample.0", "layer3"])
    add = next(n for n in steps if n.name == "add")
    assert steps[add].kind == "win" and steps[add].rule == "nary"
    # layer3 is a container: its output node is found through the traced module stack
    assert engine.layer_nodes["layer3"].meta["nn_module_stack"]


# --------------------------------------------------------------------------------------------------
# other operations
# --------------------------------------------------------------------------------------------------
class Unusual(nn.Module):
    """Functional ops, in-place ReLUs, ceil-mode pooling with padding, concatenation, an average pool,
    a sigmoid gate, a per-channel constant, a view through x.size(0), and an op nothing special-cases
    (torch.roll), which must fall back to whole maps and stay exact."""

    def __init__(self, roll: bool = True):
        super().__init__()
        torch.manual_seed(3)
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.w2 = nn.Parameter(torch.randn(6, 6, 3, 3) * 0.3)
        self.c3 = nn.Conv2d(12, 8, 3, stride=2, dilation=2, padding="valid")
        self.scale = nn.Parameter(torch.rand(1, 8, 1, 1) + 0.5)
        self.head = nn.Linear(8 * 4 * 4, 5)
        self.roll = roll

    def forward(self, x):
        a = F.relu(self.c1(x), inplace=True)
        b = F.conv2d(a, self.w2, None, 1, 1)
        b = torch.relu_(b)
        h = torch.cat([a, b], dim=1)
        h = F.max_pool2d(h, 3, 2, padding=1, ceil_mode=True)
        h = self.c3(h) * self.scale
        h = h * torch.sigmoid(h) + 0.1
        if self.roll:
            h = torch.roll(h, shifts=1, dims=3)
        h = F.avg_pool2d(h, 2)
        h = F.adaptive_avg_pool2d(h, (4, 4))
        return self.head(h.view(h.size(0), -1))


@pytest.mark.parametrize("precompute", [True, False])
def test_functional_and_unusual_operations_are_exact(precompute):
    model = Unusual(roll=False).eval()
    _, steps = assert_equal_to_full_run(model, (40, 40), 8, 4, 16, precompute=precompute)
    by_name = {n.name: s for n, s in steps.items()}
    assert by_name["cat"].rule == "cat" and by_name["max_pool2d"].rule == "slide"
    assert by_name["avg_pool2d"].kind == "win" and by_name["adaptive_avg_pool2d"].rule == "same"


def test_an_operation_without_a_rule_falls_back_to_whole_maps_exactly():
    model = Unusual(roll=True).eval()
    _, steps = assert_equal_to_full_run(model, (40, 40), 8, 4, 16)
    roll = next(n for n in steps if n.name == "roll")
    assert steps[roll].kind == "full"
    assert all(steps[n].kind == "full" for n in steps if n.name in ("avg_pool2d", "adaptive_avg_pool2d", "head"))
    assert all(steps[n].kind == "win" for n in steps if n.name in ("c1", "conv2d", "cat", "c3"))


def test_grouped_strided_convolution_and_average_pooling_with_padding():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(4)
            self.a = nn.Conv2d(4, 8, 5, stride=3, padding=2, groups=2)
            self.p = nn.AvgPool2d(3, stride=2, padding=1)
            self.b = nn.Conv2d(8, 4, (3, 1), stride=(1, 2), padding=(1, 0))
            self.fc = nn.Linear(4 * 6 * 3, 3)

        def forward(self, x):
            return self.fc(torch.flatten(self.b(torch.tanh(self.p(self.a(x)))), 1))

    assert_equal_to_full_run(Net().eval(), (36, 36), 7, 3, 25, channels=4)


def test_approximate_mode_caps_windows_and_tau_one_is_exact():
    torch.manual_seed(0)
    model = zfnet(num_classes=10, widths=(16, 32, 32, 32, 16), fc=64, pool5_size=1).eval()
    x, fill = torch.randn(1, 3, 64, 64), torch.zeros(1, 3, 64, 64)
    sweep = grid_sweep((64, 64), 14, 10)
    _, exact_steps, exact, _ = run_incremental(model, x, fill, sweep, 64)
    _, steps_one, one, _ = run_incremental(model, x, fill, sweep, 64, tau=1.0)
    torch.testing.assert_close(one, exact, rtol=0, atol=0)
    _, steps, approx, _ = run_incremental(model, x, fill, sweep, 64, tau=0.3)
    capped = [s.window.hw for n, s in steps.items() if s.rule == "slide"]
    full_hw = [s.window.hw for n, s in exact_steps.items() if s.rule == "slide"]
    assert sum(h * w for h, w in capped) < sum(h * w for h, w in full_hw)
    assert not torch.allclose(approx, exact, rtol=1e-6, atol=1e-9)


def test_local_response_norm_matches_torch():
    x = torch.randn(3, 11, 5, 4) * 3
    for size, alpha, beta, k in [(5, 1e-4, 0.75, 2.0), (4, 0.01, 0.5, 1.0), (1, 0.1, 1.0, 0.5)]:
        torch.testing.assert_close(local_response_norm(x, size, alpha, beta, k),
                                   F.local_response_norm(x, size, alpha, beta, k), rtol=1e-5, atol=1e-6)


def test_untraceable_model_raises_for_the_caller_to_fall_back():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
                return self.c(x).mean((2, 3))
            return -self.c(x).mean((2, 3))

    with pytest.raises(ValueError):  # torch.fx's TraceError
        IncrementalModel(Branchy().eval(), torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize("skip_first", [True, False])
def test_residual_sum_covers_the_union_of_both_windows(skip_first):
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(6)
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.branch = nn.Sequential(nn.Conv2d(4, 4, 5, padding=2), nn.ReLU(), nn.Conv2d(4, 4, 5, padding=2))
            self.head = nn.Linear(4 * 6 * 6, 3)

        def forward(self, x):
            a = self.stem(x)
            b = self.branch(a)
            s = a + b if skip_first else b + a
            return self.head(torch.flatten(F.max_pool2d(s, 4), 1))

    _, steps = assert_equal_to_full_run(Residual().eval(), (24, 24), 4, 3, 12, layers=["stem"])
    add = next(s for n, s in steps.items() if n.name == "add")
    branch = next(s for n, s in steps.items() if n.target == "branch.2")
    assert add.window.hw == branch.window.hw == (14, 14)  # 4 + 2 (stem 3x3) + 4 + 4 (two 5x5)


def test_no_autograd_graph_is_kept():
    torch.manual_seed(0)
    model = zfnet(num_classes=10, widths=(8, 16, 16, 16, 8), fc=16, pool5_size=1).eval()
    assert all(p.requires_grad for p in model.parameters())
    x = torch.randn(1, 3, 64, 64)
    _, _, out, maps = run_incremental(model, x, torch.zeros_like(x), grid_sweep((64, 64), 14, 25), 4,
                                      layers=["features.12"])
    engine = IncrementalModel(model, x)
    tensors = [v for v in engine.cache.values() if isinstance(v, torch.Tensor)]
    assert len(tensors) > 20 and all(v.grad_fn is None for v in tensors)  # the clean pass built no graph
    assert not out.requires_grad and not maps["features.12"].requires_grad


@pytest.mark.parametrize("arch", ["zfnet", "resnet18"])
def test_the_tail_runs_once_over_all_batches_with_the_same_numbers(arch):
    """run_batches: the windowed head batch by batch, the whole-map tail (flatten, fully connected
    layers) once; equal to whole passes and to run() batch by batch."""
    torch.manual_seed(0)
    if arch == "zfnet":
        model = zfnet(num_classes=10, widths=(16, 32, 32, 32, 16), fc=64, pool5_size=1).eval()
    else:
        model = torchvision.models.resnet18(num_classes=10).eval()
    x, fill = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    sweep = grid_sweep((64, 64), 14, 10)  # 36 positions, 6 batches of up to 7
    engine = IncrementalModel(model, x)
    steps = engine.plan(sweep, None, 7)
    first = engine.tail(steps)
    assert first is not None and steps[engine.nodes[first]].kind == "full"
    assert all(steps[n].kind != "full" for n in engine.nodes[:first])
    n = len(sweep.ys)
    bounds = [(a, min(n, a + 7)) for a in range(0, n, 7)]
    seen = []
    together = engine.run_batches(steps, fill, bounds, first, seen.append)
    assert seen == [b - a for a, b in bounds]
    with torch.no_grad():
        apart = torch.cat([engine.run(steps, fill, a, b) for a, b in bounds])
        ref = model(occluded_batch(x, fill, sweep))
    torch.testing.assert_close(together, apart, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(together, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    assert engine.tail_bytes_per_position(steps, first) > 0
