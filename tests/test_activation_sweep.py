"""Every torchvision classification model: the activation types it runs, each with a rule.

Models are built with their parameters on the ``meta`` device (no memory, no weights) and run one
forward pass under the deconvnet rule; the rule records every activation type that ran. A few small
models also run a real forward and backward pass at a small input.
"""
from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from torch import nn
from torch.overrides import TorchFunctionMode

from introspect.core import apply_rule
from introspect.core.rules import ACTIVATIONS

NAMES = torchvision.models.list_models(module=torchvision.models)
#: What the sweep found (the closing note's table); checked for the models each family stands for.
EXPECTED = {
    "alexnet": {"ReLU": "deconvnet"},
    "mobilenet_v2": {"ReLU6": "deconvnet"},
    "mobilenet_v3_small": {"Hardswish": "deconvnet", "ReLU": "deconvnet", "Hardsigmoid gate": "fixed"},
    "efficientnet_b0": {"SiLU": "deconvnet", "Sigmoid gate": "fixed"},
    "regnet_y_400mf": {"ReLU": "deconvnet", "Sigmoid gate": "fixed"},
    "convnext_tiny": {"GELU": "deconvnet"},
    "vit_b_16": {"GELU": "deconvnet"},
    "maxvit_t": {"GELU": "deconvnet", "SiLU": "deconvnet", "Tanh": "deconvnet", "Sigmoid gate": "fixed"},
    "swin_v2_t": {"ReLU": "deconvnet", "GELU": "deconvnet", "Sigmoid": "deconvnet"},
}
#: torch.nn.modules.activation classes that are not element-wise activations.
NOT_ACTIVATIONS = {"Softmax", "Softmin", "LogSoftmax", "Softmax2d", "MultiheadAttention"}


class _EmptyOnMeta(TorchFunctionMode):
    """Parameters (made with ``torch.empty``) on the meta device; other tensors as usual (RegNet
    computes its widths with torch at construction)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.empty:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def _meta_model(name: str) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _EmptyOnMeta():
            model = torchvision.models.get_model(name)
    return model.to("meta").eval()


@pytest.mark.parametrize("name", NAMES)
def test_every_activation_of_every_torchvision_model_has_a_rule(name):
    model = _meta_model(name)
    size = 299 if name.startswith("inception") else 224
    x = torch.empty(1, 3, size, size, device="meta", requires_grad=True)
    seen: dict = {}
    with apply_rule(model, "deconvnet", seen=seen):
        model(x)
    assert seen, f"{name}: no activation ran"
    assert not [k for k, v in seen.items() if "no rule" in v], seen
    names = {a.name for a in ACTIVATIONS.values()}
    assert {k.removesuffix(" gate") for k in seen} <= names
    # every activation module the model holds ran and was recorded
    held = {type(m).__name__ for m in model.modules() if type(m).__module__ == "torch.nn.modules.activation"}
    assert held - NOT_ACTIVATIONS <= {k.removesuffix(" gate") for k in seen}, (held, seen)
    if name in EXPECTED:
        assert seen == EXPECTED[name]


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0"])
def test_small_models_real_pass_deconvnet_is_not_the_gradient(name):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    grads = {}
    for rule in ("deconvnet", "gradient"):
        inp = x.clone().requires_grad_()
        with apply_rule(model, rule):
            (grads[rule],) = torch.autograd.grad(model(inp)[0, 3], inp)
    assert torch.isfinite(grads["deconvnet"]).all() and grads["deconvnet"].abs().sum() > 0
    cos = torch.nn.functional.cosine_similarity(grads["deconvnet"].flatten(), grads["gradient"].flatten(), dim=0)
    assert cos < 0.99
