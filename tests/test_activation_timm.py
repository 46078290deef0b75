"""timm's activation modules (their own composite forms included) and a sample of timm models."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from introspect.core import apply_rule
from introspect.core.rules import ACTIVATIONS

timm_act = pytest.importorskip("timm.layers.activations")

# timm module -> the torch module of the same activation type (its rules must agree)
PAIRS = {
    "Swish": (lambda: timm_act.Swish(), lambda: nn.SiLU(), "SiLU"),
    "Swish inplace": (lambda: timm_act.Swish(inplace=True), lambda: nn.SiLU(), "SiLU"),
    "Mish": (lambda: timm_act.Mish(), lambda: nn.Mish(), "Mish"),
    "HardSwish": (lambda: timm_act.HardSwish(), lambda: nn.Hardswish(), "Hardswish"),
    "HardSigmoid": (lambda: timm_act.HardSigmoid(), lambda: nn.Hardsigmoid(), "Hardsigmoid"),
    "GELU": (lambda: timm_act.GELU(), lambda: nn.GELU(), "GELU"),
    "GELUTanh": (lambda: timm_act.GELUTanh(), lambda: nn.GELU("tanh"), "GELU"),
    "Sigmoid": (lambda: timm_act.Sigmoid(), lambda: nn.Sigmoid(), "Sigmoid"),
    "Tanh": (lambda: timm_act.Tanh(), lambda: nn.Tanh(), "Tanh"),
    "PReLU": (lambda: timm_act.PReLU(4, init=0.2), lambda: nn.PReLU(4, init=0.2), "PReLU"),
}


class Net(nn.Module):
    def __init__(self, act):
        super().__init__()
        torch.manual_seed(3)
        self.c1 = nn.Conv2d(2, 4, 3)
        self.c2 = nn.Conv2d(4, 4, 3)
        self.act = act

    def forward(self, x):
        return self.c2(self.act(self.c1(x))).flatten(1)


def _project(net, rule, x, seed, seen=None):
    inp = x.clone().requires_grad_()
    with apply_rule(net, rule, seen=seen):
        (g,) = torch.autograd.grad(net(inp), inp, seed)
    return g


@pytest.mark.parametrize("kind", ["deconvnet", "guided", "gradient"])
@pytest.mark.parametrize("name", sorted(PAIRS))
def test_timm_modules_get_the_rule_of_their_type(name, kind):
    ours, torchs, type_name = PAIRS[name]
    gen = torch.Generator().manual_seed(0)
    x, seed = torch.randn(2, 2, 7, 7, generator=gen) * 3, torch.randn(2, 36, generator=gen)
    seen: dict = {}
    got = _project(Net(ours()).eval(), kind, x, seed, seen)
    torch.testing.assert_close(got, _project(Net(torchs()).eval(), kind, x, seed), rtol=1e-4, atol=1e-5)
    assert seen == {type_name: kind}


def test_quick_gelu_is_ruled_as_a_gelu():
    gen = torch.Generator().manual_seed(0)
    x, seed = torch.randn(2, 2, 7, 7, generator=gen) * 3, torch.randn(2, 36, generator=gen)
    net = Net(timm_act.QuickGELU()).eval()
    seen: dict = {}
    # deconvnet: relu of the signal, as for GELU (the forward differs, not the rule)
    got = _project(net, "deconvnet", x, seed, seen)
    assert seen == {"GELU": "deconvnet"}
    g = F.conv_transpose2d(seed.view(2, 4, 3, 3), net.c2.weight)
    torch.testing.assert_close(got, F.conv_transpose2d(F.relu(g), net.c1.weight), rtol=1e-5, atol=1e-6)
    # guided: relu(signal) * f'(x), with x * sigmoid(1.702 x) differentiated by hand
    with torch.no_grad():
        h = net.c1(x)
    s = torch.sigmoid(1.702 * h)
    slope = s + 1.702 * h * s * (1 - s)
    guided = _project(net, "guided", x, seed)
    torch.testing.assert_close(guided, F.conv_transpose2d(F.relu(g) * slope, net.c1.weight), rtol=1e-5, atol=1e-6)


class _EmptyOnMeta(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.empty:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


TIMM_MODELS = {
    "efficientnet_b0": {"SiLU": "deconvnet", "Sigmoid gate": "fixed"},
    "mobilenetv3_small_100": {"Hardswish": "deconvnet", "ReLU": "deconvnet", "Hardsigmoid gate": "fixed"},
    "cspdarknet53": {"LeakyReLU": "deconvnet"},
    "rexnet_100": {"SiLU": "deconvnet", "ReLU6": "deconvnet", "ReLU": "deconvnet", "Sigmoid gate": "fixed"},
    "eca_nfnet_l0": {"SiLU": "deconvnet", "Sigmoid gate": "fixed"},
    "ghostnetv2_100": {"ReLU": "deconvnet", "Sigmoid gate": "fixed", "Hardsigmoid gate": "fixed"},
    "levit_128s": {"Hardswish": "deconvnet"},
    "convnext_atto": {"GELU": "deconvnet"},
}


@pytest.mark.parametrize("name", sorted(TIMM_MODELS))
def test_timm_models_activation_types(name):
    import timm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _EmptyOnMeta():
            model = timm.create_model(name, pretrained=False)
    model = model.to("meta").eval()
    x = torch.empty(1, *model.pretrained_cfg.get("input_size", (3, 224, 224)), device="meta", requires_grad=True)
    seen: dict = {}
    with apply_rule(model, "deconvnet", seen=seen):
        model(x)
    assert seen == TIMM_MODELS[name]
    assert {k.removesuffix(" gate") for k in seen} <= {a.name for a in ACTIVATIONS.values()}
