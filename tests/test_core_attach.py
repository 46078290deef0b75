"""attach(): records activations and leaves every model exactly as it was, also after errors."""
from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from introspect.core import apply_rule, attach
from introspect.core.attach import same_snapshot, snapshot
from introspect.errors import IntrospectError

MODELS = {
    "zfnet": ["conv1", "pool1", "norm2", "conv5", "fc7"],
    "alexnet_tv": ["features.0", "features.10", "classifier.4"],
    "vgg11": ["features.0", "features.18", "classifier.3"],
    "resnet18": ["relu", "layer1.0.relu", "layer4", "fc"],
}


def small_vgg11():
    """torchvision's VGG-11 class and module tree (configuration "A": convolutions, in-place ReLUs,
    max pools; the adaptive average pool; the classifier's Linear, in-place ReLU, Dropout sequence)
    at widths 8 to 64 and a 64-unit classifier: what attach hooks and restores is the same as in
    ``make_model("vgg11")``, with 0.35 M of its 133 M parameters (whose random initialisation and
    backward passes were most of these tests' time)."""
    from torchvision.models.vgg import VGG, cfgs, make_layers

    torch.manual_seed(0)
    features = make_layers([v if v == "M" else v // 8 for v in cfgs["A"]])
    with torch.device("meta"):  # VGG's own 25,088 x 4,096 classifier is replaced below: never allocated
        model = VGG(nn.Sequential(), num_classes=10, init_weights=False)
    model.features = features
    model.classifier = nn.Sequential(nn.Linear(64 * 7 * 7, 64), nn.ReLU(True), nn.Dropout(),
                                     nn.Linear(64, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 10))
    assert not any(t.is_meta for t in model.state_dict().values())
    return model.eval()


def build(make_model, name):
    return small_vgg11() if name == "vgg11" else make_model(name)


def hooks_everywhere(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(m._backward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("name", list(MODELS))
def test_records_and_restores(make_model, name):
    model = build(make_model, name)
    size = 224 if name == "zfnet" else 64
    x = torch.randn(2, 3, size, size)
    before = snapshot(model)
    with torch.no_grad():
        expected = model(x)
    with attach(model, MODELS[name]) as rec:
        with torch.no_grad():
            out = model(x)
        assert hooks_everywhere(model) == len(MODELS[name])
    assert torch.equal(out, expected)
    assert hooks_everywhere(model) == 0
    assert same_snapshot(before, snapshot(model))
    with torch.no_grad():
        assert torch.equal(model(x), expected)  # bit-identical after detaching
    for layer in MODELS[name]:
        assert rec[layer].shape[0] == 2


@pytest.mark.parametrize("name", list(MODELS))
def test_restores_after_exception_midway(make_model, name):
    model = build(make_model, name)
    size = 224 if name == "zfnet" else 64
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        expected = model(x)
    before = snapshot(model)
    with pytest.raises(RuntimeError):
        with apply_rule(model, "deconvnet"), attach(model, MODELS[name][:2], detach=False):
            model(torch.randn(1, 5, size, size))  # wrong channel count: fails inside the forward pass
    assert hooks_everywhere(model) == 0
    assert same_snapshot(before, snapshot(model))
    assert all(getattr(m, "inplace", True) in (True, False) for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(x), expected)
    # the rule's mode is gone: plain autograd again
    xx = x.clone().requires_grad_()
    model(xx)[0, 0].backward()
    ref = x.clone().requires_grad_()
    torch.autograd.grad(model(ref)[0, 0], ref)


def test_attach_rolls_back_when_a_layer_is_unknown(make_model):
    model = small_vgg11()
    with pytest.raises(IntrospectError, match="did you mean"):
        with attach(model, ["features.0", "featurs.3"]):
            pass
    assert hooks_everywhere(model) == 0


def test_training_flag_and_inplace_flags_unchanged(make_model):
    model = make_model("resnet18").train()
    flags = [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)]
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    with apply_rule(model, "guided"), attach(model, ["layer2"], detach=False) as rec:
        model(x)
        rec["layer2"].sum().backward()
    assert model.training
    assert flags == [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)]


def test_no_reference_cycle_keeps_model_alive(make_model):
    gc.collect()
    gc.disable()
    try:
        model = small_vgg11()
        ref = weakref.ref(model)
        with apply_rule(model, "deconvnet"), attach(model, ["features.3"], detach=False) as rec:
            x = torch.randn(1, 3, 32, 32, requires_grad=True)
            model(x)
            act_ref = weakref.ref(rec["features.3"])
            rec["features.3"].sum().backward()
        del model, rec, x
        assert ref() is None and act_ref() is None  # freed by reference counting alone
    finally:
        gc.enable()


def test_stop_truncates_forward(make_model):
    model = make_model("zfnet")
    calls = []
    handle = model.classifier.register_forward_hook(lambda *a: calls.append(1))
    try:
        with attach(model, ["conv5"]) as rec, torch.no_grad():
            assert rec.forward(torch.randn(1, 3, 224, 224), stop=True) is None
        assert rec["conv5"].shape == (1, 256, 13, 13) and not calls
    finally:
        handle.remove()


def test_reused_relu_module_keeps_last_output():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.relu(self.relu(x) - 1.0)

    net = Net()
    x = torch.tensor([[0.5, 3.0, -2.0]])
    with attach(net, ["relu"]) as rec:
        out = net(x.clone())
    assert torch.equal(rec["relu"], out) and torch.equal(out, torch.tensor([[0.0, 2.0, 0.0]]))


def test_functional_relu_records_with_module_hooks_untouched():
    conv = nn.Conv2d(1, 2, 3)
    net = nn.Sequential(conv)
    with attach(net, [conv]) as rec:
        net(torch.ones(1, 1, 5, 5))
    assert rec["0"].shape == (1, 2, 3, 3)
    assert F.relu is torch.nn.functional.relu


def test_records_conv_output_before_an_inplace_relu(make_model):
    model = make_model("zfnet")
    x = torch.randn(1, 3, 224, 224)
    with attach(model, ["conv5"]) as rec, torch.no_grad():
        model(x)
    reference = model.features[:13](x)  # conv5's output computed independently
    assert rec["conv5"].min() < 0
    torch.testing.assert_close(rec["conv5"], reference)
