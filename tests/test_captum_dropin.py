"""``introspect.captum``: the drop-in classes give captum's own results (to 1e-5 relative) on seeded
torchvision models and on captum's test models, for every argument form, and say which path ran."""
from __future__ import annotations

import pytest
import torch
import torchvision
from captum import attr as ca
from captum.testing.helpers import basic_models as bm

import conftest
import introspect.captum as ic
import introspect.core.sweep as sweep_mod


def vgg11():
    """VGG11 with a one-layer classifier: its 4096-wide layers would be most of the test's time."""
    model = torchvision.models.vgg11(num_classes=10)
    model.classifier = torch.nn.Linear(512 * 7 * 7, 10)
    return model


ZOO = {
    "vgg11": vgg11,
    "resnet18": lambda: torchvision.models.resnet18(num_classes=10),
    "densenet121": lambda: torchvision.models.densenet121(num_classes=10),
    "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(num_classes=10),
}


def seeded(name, dtype=torch.float64):
    """A seeded model in eval mode; float64 so that the comparison sees the method, not the rounding
    of different batchings (float32 is checked separately, against the scale of the outputs)."""
    torch.manual_seed(0)
    model = ZOO[name]().eval().to(dtype)
    for m in model.modules():  # BatchNorm statistics that are not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model


def close(ours, theirs):
    if isinstance(theirs, tuple):
        assert isinstance(ours, tuple) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            close(a, b)
        return
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5 * float(theirs.abs().max()) + 1e-12)


@pytest.fixture
def force(monkeypatch):
    """Make the cost model take a given path: incremental, full, or mixed (both measured)."""
    def set_path(path):
        low, high = {"incremental": (1.0, 1.01), "full": (-1.0, 0.0), "mixed": (0.0, 1.01)}[path]
        monkeypatch.setattr(sweep_mod, "INCREMENTAL_BELOW", low)
        monkeypatch.setattr(sweep_mod, "FULL_ABOVE", high)
    return set_path


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return torch.randn(2, 3, 40, 40, dtype=torch.float64)


def test_occlusion_in_float32_equals_captum_to_the_rounding_of_the_outputs(images, force, one_thread):
    force("incremental")
    model = seeded("resnet18", torch.float32)
    x = images.float()
    kwargs = dict(sliding_window_shapes=(3, 20, 20), strides=(3, 14, 14), target=[3, 7])
    ours = ic.Occlusion(model).attribute(x, **kwargs)
    theirs = ca.Occlusion(model).attribute(x, perturbations_per_eval=8, **kwargs)
    with torch.no_grad():
        scale = float(model(x).abs().max())
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5 * scale)


# --------------------------------------------------------------------------------------------------
# Occlusion
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, path", [(name, path) for name in ZOO for path in ("incremental", "full")]
                         + [("resnet18", "mixed")])
def test_occlusion_equals_captum_on_the_torchvision_zoo(name, path, images, force, one_thread):
    """Windows over all channels, a clipped last window (40 - 18 is not a multiple of 12), per-example
    targets, a batch of two images."""
    force(path)
    model = seeded(name)
    # measuring both paths needs enough positions (49 here; 9 are decided by the work fraction alone)
    stride = 4 if path == "mixed" else 12
    kwargs = dict(sliding_window_shapes=(3, 18, 18), strides=(3, stride, stride), target=[3, 7])
    ours = ic.Occlusion(model)
    close(ours.attribute(images, **kwargs), ca.Occlusion(model).attribute(images, perturbations_per_eval=16, **kwargs))
    assert ours.last_path == path


ARGUMENTS = {
    "scalar baseline, int target": dict(sliding_window_shapes=(3, 16, 16), strides=16, baselines=0.5, target=2),
    "channel windows, clipped, tensor baseline": dict(
        sliding_window_shapes=(2, 15, 13), strides=(1, 10, 9), baselines="tensor1", target=torch.tensor(4)),
    "per-example tensor baseline and target": dict(
        sliding_window_shapes=(2, 24, 24), strides=(1, 16, 16), baselines="tensorN", target=torch.tensor([1, 5])),
    "tuple baseline, ppe, default stride 1 on a small window count": dict(
        sliding_window_shapes=(3, 38, 37), baselines=(-1.0,), target=0, perturbations_per_eval=7),
    "no baseline, list target": dict(sliding_window_shapes=(3, 20, 20), strides=(3, 20, 20), target=[9, 0]),
}


@pytest.mark.parametrize("case, path", [(case, "incremental") for case in ARGUMENTS]
                         + [("channel windows, clipped, tensor baseline", "full")])
def test_occlusion_argument_forms_equal_captum(case, path, images, force, one_thread):
    force(path)
    model = seeded("resnet18")
    kwargs = dict(ARGUMENTS[case])
    if kwargs.get("baselines") == "tensor1":
        kwargs["baselines"] = torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    elif kwargs.get("baselines") == "tensorN":
        kwargs["baselines"] = torch.randn(2, 3, 40, 40, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ours = ic.Occlusion(model)
    theirs = dict(kwargs, perturbations_per_eval=kwargs.get("perturbations_per_eval", 32))
    close(ours.attribute(images, **kwargs), ca.Occlusion(model).attribute(images, **theirs))
    assert ours.last_path == path


def test_occlusion_tuple_of_one_image_and_progress(images, capsys, one_thread):
    model = seeded("vgg11")
    kwargs = dict(sliding_window_shapes=(3, 20, 20), strides=(3, 10, 10), target=1)
    ours = ic.Occlusion(model)
    out = ours.attribute((images[:1],), show_progress=True, **kwargs)
    assert "Occlusion attribution" in capsys.readouterr().err
    close(out, ca.Occlusion(model).attribute((images[:1],), **kwargs))
    assert ours.last_path in ("incremental", "full", "mixed")


def test_occlusion_goes_to_captum_where_it_must(images):
    """Additional forward arguments, several inputs, 2-D inputs, a plain function and a model in
    training mode run captum's own code, with captum's results."""
    torch.manual_seed(0)
    conv = bm.BasicModel_ConvNet_One_Conv().eval().double()
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    x2 = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    ours = ic.Occlusion(conv)
    close(ours.attribute(x, (1, 2, 2), target=1, additional_forward_args=(x2,)),
          ca.Occlusion(conv).attribute(x, (1, 2, 2), target=1, additional_forward_args=(x2,)))
    assert ours.last_path == "captum"

    multi = bm.BasicModel6_MultiTensor().eval()
    a, b = torch.randn(3, 3), torch.randn(3, 3)  # captum's test models are float32
    ours = ic.Occlusion(multi)
    close(ours.attribute((a, b), ((2,), (1,))), ca.Occlusion(multi).attribute((a, b), ((2,), (1,))))
    assert ours.last_path == "captum"

    layered = bm.BasicModel_MultiLayer().eval()
    ours = ic.Occlusion(layered)
    close(ours.attribute(a, (2,), target=1), ca.Occlusion(layered).attribute(a, (2,), target=1))
    assert ours.last_path == "captum"

    model = seeded("resnet18")
    def fn(inp):
        return torch.softmax(model(inp), 1)
    ours = ic.Occlusion(fn)
    kwargs = dict(sliding_window_shapes=(3, 20, 20), strides=20, target=1)
    close(ours.attribute(images, **kwargs), ca.Occlusion(fn).attribute(images, **kwargs))
    assert ours.last_path == "captum"
    model.train()
    ours = ic.Occlusion(model)
    torch.manual_seed(0)
    close(ours.attribute(images, **kwargs), ca.Occlusion(model).attribute(images, **kwargs))
    assert ours.last_path == "captum"


def test_occlusion_on_captums_convnets(force, one_thread):
    force("incremental")
    torch.manual_seed(0)
    net = bm.BasicModel_ConvNet().eval().double()
    x = torch.randn(3, 1, 10, 10, dtype=torch.float64)
    kwargs = dict(sliding_window_shapes=(1, 3, 3), strides=(1, 2, 2), target=[1, 2, 3], baselines=0.25)
    ours = ic.Occlusion(net)
    close(ours.attribute(x, **kwargs), ca.Occlusion(net).attribute(x, **kwargs))
    assert ours.last_path == "incremental"
    # a scalar output per example (no target): BasicModel_ConvNetWithPaddingDilation summed
    dil = bm.BasicModel_ConvNetWithPaddingDilation().eval().double()
    y = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    ours = ic.Occlusion(dil)
    close(
        ours.attribute(y, (1, 3, 3), strides=2, target=2),
        ca.Occlusion(dil).attribute(y, (1, 3, 3), strides=2, target=2),
    )
    assert ours.last_path in ("incremental", "full")
    one = bm.BasicModel_ConvNet_One_Conv().eval().double()
    z = torch.randn(2, 1, 4, 4, dtype=torch.float64) * 30
    ours = ic.Occlusion(one)
    close(ours.attribute(z, (1, 2, 2), target=(1,)), ca.Occlusion(one).attribute(z, (1, 2, 2), target=(1,)))
    assert ours.last_path == "full"  # its forward takes a second, optional tensor: fx cannot run it alone


def test_occlusion_errors_are_captums():
    model = seeded("vgg11")
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    for kwargs in (dict(sliding_window_shapes=(3, 40, 40)), dict(sliding_window_shapes=(3, 8, 8), strides=9)):
        with pytest.raises(AssertionError) as theirs:
            ca.Occlusion(model).attribute(x, target=0, **kwargs)
        with pytest.raises(AssertionError) as ours:
            ic.Occlusion(model).attribute(x, target=0, **kwargs)
        assert str(ours.value) == str(theirs.value)


def test_occlusion_is_accepted_where_captum_accepts_an_attribution(images, one_thread):
    from captum.metrics import infidelity, sensitivity_max

    model = seeded("resnet18")
    ours, theirs = ic.Occlusion(model), ca.Occlusion(model)
    assert isinstance(ours, ca.Occlusion) and isinstance(ours, ca.Attribution)
    kwargs = dict(sliding_window_shapes=(3, 20, 20), strides=(3, 20, 20), target=3)
    torch.manual_seed(2)
    a = ca.NoiseTunnel(ours).attribute(images, nt_type="smoothgrad", nt_samples=2, stdevs=0.1, **kwargs)
    torch.manual_seed(2)
    b = ca.NoiseTunnel(theirs).attribute(images, nt_type="smoothgrad", nt_samples=2, stdevs=0.1, **kwargs)
    close(a, b)
    attr = ours.attribute(images, **kwargs)

    def perturb(inputs):
        noise = torch.randn(inputs.shape, generator=torch.Generator().manual_seed(0), dtype=inputs.dtype) * 0.01
        return noise, inputs - noise
    torch.manual_seed(5)
    a = infidelity(model, perturb, images, attr, target=3, n_perturb_samples=2)
    torch.manual_seed(5)
    b = infidelity(model, perturb, images, theirs.attribute(images, **kwargs), target=3, n_perturb_samples=2)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    torch.manual_seed(6)
    s = sensitivity_max(ours.attribute, images, n_perturb_samples=1, **kwargs)
    assert s.shape == (2,) and bool((s >= 0).all())


# --------------------------------------------------------------------------------------------------
# the deconvnet family
# --------------------------------------------------------------------------------------------------
def small_zfnet(lrn=False):
    return conftest.small_zfnet(num_classes=10, widths=(16, 32, 32, 32, 16), fc=32, lrn=lrn, dtype=torch.float64)


@pytest.mark.parametrize("neuron", [(3, 2, 1), (0, 0, 0), (15, -1, -1), (7, 1, 2)])
def test_neuron_deconvolution_equals_captum_on_a_chain(neuron):
    model = small_zfnet()
    torch.manual_seed(2)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    layer = model.features[12]
    ours = ic.NeuronDeconvolution(model, layer)
    close(ours.attribute(x, neuron_selector=neuron), ca.NeuronDeconvolution(model, layer).attribute(x, neuron))
    assert ours.last_path == "chain"
    # a second neuron of the same, unchanged input reuses the forward pass
    chain = ours._cached[2]
    close(ours.attribute((x,), neuron_selector=(1, 1, 1)),
          ca.NeuronDeconvolution(model, layer).attribute((x,), (1, 1, 1)))
    assert ours._cached[2] is chain
    x.mul_(2)  # an in-place change is seen
    close(ours.attribute(x, neuron_selector=neuron), ca.NeuronDeconvolution(model, layer).attribute(x, neuron))
    assert ours._cached[2] is not chain


def test_neuron_deconvolution_keeps_the_image_free_top_of_the_walk_exactly(one_thread):
    """The steps above the first max pool are walked once per channel and cut pattern and serve
    every image and position cut alike; a change of the weights is seen."""
    model = small_zfnet()
    torch.manual_seed(3)
    images = torch.randn(2, 3, 144, 144, dtype=torch.float64)
    layer = model.features[12]  # the features alone: the classifier is sized for 64 x 64 images
    ours, theirs = ic.NeuronDeconvolution(model.features, layer), ca.NeuronDeconvolution(model.features, layer)
    with torch.no_grad():
        h, w = model.features[:13](images[:1]).shape[-2:]
    assert h == 8  # two interior positions that every cut leaves alike, and both borders
    calls = 0
    for i in range(2):
        for y in range(h):
            for x in range(w):
                close(ours.attribute(images[i:i + 1], (5, y, x)), theirs.attribute(images[i:i + 1], (5, y, x)))
                calls += 1
    assert ours.last_path == "chain" and len(ours._image_free[1]) < calls // 2
    with torch.no_grad():
        model.features[10].weight.mul_(-1.5)  # above the first pool: what was kept no longer holds
    close(ours.attribute(images[:1], (5, 2, 2)), theirs.attribute(images[:1], (5, 2, 2)))


def test_neuron_deconvolution_on_vgg_and_relu_layers():
    model = seeded("vgg11")
    torch.manual_seed(3)
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    for layer in (model.features[8], model.features[9], model.features[10]):  # conv, its ReLU, a pool
        ours = ic.NeuronDeconvolution(model, layer)
        close(ours.attribute(x, (5, 1, 0)), ca.NeuronDeconvolution(model, layer).attribute(x, (5, 1, 0)))
        assert ours.last_path == "chain"


def test_neuron_deconvolution_goes_to_captum_where_it_must(images):
    lrn = small_zfnet(lrn=True)
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    layer = lrn.features[12]
    ours = ic.NeuronDeconvolution(lrn, layer)
    close(ours.attribute(x, (2, 1, 1)), ca.NeuronDeconvolution(lrn, layer).attribute(x, (2, 1, 1)))
    assert ours.last_path == "captum"  # captum differentiates the LRN, the deconvnet passes it through
    model = seeded("resnet18")
    for selector, kwargs in (((3, 1, 1), {}), ((slice(0, 4), 1, 1), {}), (lambda out: out[:, 2].sum((1, 2)), {}),
                             ((3, 1, 1), {"attribute_to_neuron_input": True})):
        ours = ic.NeuronDeconvolution(model, model.layer2)
        close(ours.attribute(images, selector, **kwargs),
              ca.NeuronDeconvolution(model, model.layer2).attribute(images, selector, **kwargs))
        assert ours.last_path == "captum"
    net = small_zfnet()
    ours = ic.NeuronDeconvolution(net, net.features[12])
    with pytest.raises(IndexError):
        ours.attribute(x, (99, 0, 0))


@pytest.mark.parametrize("cls", ["Deconvolution", "GuidedBackprop"])
def test_deconvolution_and_guided_backprop_are_captums(cls, images):
    model = seeded("resnet18")
    ours = getattr(ic, cls)(model)
    assert isinstance(ours, getattr(ca, cls))
    close(ours.attribute(images, target=[1, 2]), getattr(ca, cls)(model).attribute(images, target=[1, 2]))
    assert ours.last_path == "captum"
