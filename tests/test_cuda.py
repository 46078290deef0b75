"""Every method on a second device against the CPU: projection, top-k, occlusion (incremental
inference) and correspondence, within float32 tolerance.

Each test builds two models from the same seed and runs the method twice, once on the CPU (the
reference) and once on ``device``. ``device`` is ``cpu`` (always run: two independent runs must agree,
which checks the comparisons themselves and the methods' determinism) and ``cuda`` (marked ``cuda``,
skipped without a GPU). TF32 is switched off for the comparison: with it, CUDA convolutions round
their inputs to 10-bit mantissas, far outside float32 tolerance.

Arg-max decisions (the strongest position of a map, the order of two images, the top label) are
compared only where the reference has a margin well above float32 rounding; a near tie may go
either way on another device. The tests check that almost every entry has such a margin.
"""
from __future__ import annotations

import pytest
import torch

import conftest
from introspect.core import attach

CUDA = pytest.param("cuda", marks=[pytest.mark.cuda,
                                   pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")])
DEVICES = ["cpu", CUDA]
MARGIN = 1e-4  # relative margin above which an arg-max must be the same on both devices


@pytest.fixture(autouse=True)
def _float32():
    """IEEE float32 convolutions and matrix products on CUDA; one CPU thread (tiny models)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.get_num_threads()
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_num_threads(1)
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved[:2]
    torch.set_num_threads(saved[2])


def small_zfnet(device: str = "cpu") -> torch.nn.Module:
    """A ZFNet-shaped net (conv maps 5x5 at 96x96 input), seeded: every call builds the same weights."""
    return conftest.small_zfnet(widths=(8, 12, 16, 16, 10), fc=16, pool5_size=2, num_classes=4, device=device)


def images(n: int, seed: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 96, 96, generator=gen)


def on_device(model, device: str) -> bool:
    """The model is still on ``device`` after a call (methods move the data, never the model; data
    left on another device than the weights would have made the call fail)."""
    return {p.device.type for p in model.parameters()} == {torch.device(device).type}


def map_margins(model, x, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and map of ``layer`` (CPU reference): the strongest activation and its lead over
    the second strongest position, ``(N, C)`` each."""
    with torch.no_grad(), attach(model, [layer]) as rec:
        rec.forward(x, stop=True)
        act = rec[layer]
    top2 = act.flatten(2).topk(2, dim=2).values
    return top2[..., 0], top2[..., 0] - top2[..., 1]


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> None:
    """Float32 agreement, relative to the size of the whole tensor (sums of many products)."""
    scale = float(b.abs().max()) if b.numel() else 0.0
    torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * scale + 1e-7)


def test_two_cpu_runs_are_compared_for_real():
    """The comparison helpers fail on a difference just above float32 rounding."""
    a = torch.linspace(-1, 1, 100)
    close(a + 1e-6, a)
    with pytest.raises(AssertionError):
        close(a + 1e-3, a)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["max", "map"])
def test_projection(device, mode):
    from introspect_deconv import project

    x = images(3)
    ref_model, model = small_zfnet(), small_zfnet(device)
    ref = project(ref_model, x, layer="conv5", channels=list(range(10)), mode=mode)
    got = project(model, x.to(device), layer="conv5", channels=list(range(10)), mode=mode)
    assert on_device(model, device)
    assert got.projections.device.type == "cpu" and got.method == ref.method == "chain"
    assert torch.equal(got.channel, ref.channel) and torch.equal(got.image_index, ref.image_index)
    close(got.activation, ref.activation, 1e-5)
    if mode == "map":
        close(got.projections, ref.projections)
        return
    best, lead = map_margins(ref_model, x, "features.12")
    sure = (lead > MARGIN * best.abs().max()).flatten()        # P = N * 10, image-major like the result
    assert sure.float().mean() > 0.9
    assert torch.equal(got.position[sure], ref.position[sure]) and torch.equal(got.boxes[sure], ref.boxes[sure])
    for p in sure.nonzero().flatten().tolist():
        close(got.projections[p], ref.projections[p])


@pytest.mark.parametrize("device", DEVICES)
def test_top_k(device):
    from introspect_deconv import top_k

    n = 10
    x = images(n)
    ref_model, model = small_zfnet(), small_zfnet(device)
    ref = top_k(ref_model, x, layer="conv5", k=n, batch_size=4)             # k = n: every image is ranked
    got = top_k(model, x, layer="conv5", k=n, batch_size=4)                # a CPU data set, streamed to the model
    assert on_device(model, device)
    assert got.images_seen == ref.images_seen == n and torch.equal(got.channels, ref.channels)
    # the ranked values themselves are continuous: compare them all, whatever the order of near ties
    close(got.activation, ref.activation, 1e-5)
    best, lead = map_margins(ref_model, x, "features.12")
    scale = MARGIN * float(ref.activation.abs().max())
    sure = torch.zeros(ref.activation.shape, dtype=torch.bool)
    for j in range(len(ref.channels)):
        v = ref.activation[j]
        gaps = torch.cat([torch.tensor([float("inf")]), v[:-1] - v[1:], torch.tensor([float("inf")])])
        apart = (gaps[:-1] > scale) & (gaps[1:] > scale)        # from the entries above and below
        sure[j] = apart & (lead[ref.image_index[j], ref.channels[j]] > scale)
    assert sure.float().mean() > 0.75
    assert torch.equal(got.image_index[sure], ref.image_index[sure])
    assert torch.equal(got.position[sure], ref.position[sure]) and torch.equal(got.boxes[sure], ref.boxes[sure])
    assert torch.equal(got.patches[sure], ref.patches[sure])     # the same input pixels, cut the same way
    for j, r in sure.nonzero().tolist():
        close(got.projections[j, r], ref.projections[j, r])


@pytest.mark.parametrize("device", DEVICES)
def test_occlusion_incremental(device):
    from introspect_occlusion import occlusion

    x = images(1, seed=7)
    ref_model, model = small_zfnet(), small_zfnet(device)
    options = dict(size=24, stride=12, targets=[0, 1, 2, 3], layers=["conv5", "conv3"], channels=[3, 5])
    ref = occlusion(ref_model, x, incremental=True, **options)
    got = occlusion(model, x.to(device), incremental=True, **options)
    full = occlusion(model, x.to(device), incremental=False, project=False, **options)
    assert on_device(model, device)
    assert got.mode == ref.mode == "incremental" and got.stats["device"].startswith(device)
    assert got.prob.shape == (4, 7, 7) and got.prob.device.type == "cpu"
    for result in (got, full):                                   # incremental and whole passes
        close(result.prob, ref.prob, 1e-5)
        close(result.activation, ref.activation)
    close(got.clean_prob, ref.clean_prob, 1e-5)
    close(got.clean_activation, ref.clean_activation)
    top2 = ref.prob.topk(2, dim=0).values
    sure = (top2[0] - top2[1]) > MARGIN
    assert sure.float().mean() > 0.9
    assert torch.equal(got.label[sure], ref.label[sure])
    close(got.projection, ref.projection)


@pytest.mark.parametrize("device", DEVICES)
def test_correspondence(device):
    from introspect_correspondence import correspondence

    x = images(4, seed=11)
    parts = {"corner": [0, 0, 24, 24], "centre": [36, 36, 60, 60]}
    options = dict(layers=["features.11", "features.13"], random_trials=3, seed=5)
    ref_model, model = small_zfnet(), small_zfnet(device)
    ref = correspondence(ref_model, x, parts=parts, **options)
    got = correspondence(model, x.to(device), parts=parts, **options)
    assert on_device(model, device)
    assert got.feature_size == ref.feature_size == {"features.11": 400, "features.13": 250}
    assert torch.equal(got.input, ref.input)
    for part in parts:
        assert torch.equal(got.boxes[part], ref.boxes[part])
        assert torch.equal(got.random_boxes[part], ref.random_boxes[part])
    # Hamming distances of sign patterns: a change within float32 rounding of the "no change"
    # threshold may flip one feature (1/D); a wrong device would move them by far more
    for row in ref.mean:
        for layer in options["layers"]:
            assert abs(got.mean[row][layer] - ref.mean[row][layer]) <= 0.01, (row, layer)
    for part in parts:
        for layer in options["layers"]:
            assert (got.pairs[part][layer] - ref.pairs[part][layer]).abs().max() <= 0.02
            assert (got.random_pairs[part][layer] - ref.random_pairs[part][layer]).abs().max() <= 0.02
    assert any(ref.mean[p][l] > 0.05 for p in parts for l in options["layers"]), "the parts must change something"
