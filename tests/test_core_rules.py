"""Backward rules against hand computations and captum, for every way a ReLU can be called."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from introspect.core import RULES, Rule, apply_rule
from introspect.errors import IntrospectError


class ThreeWays(nn.Module):
    """ReLU as an inplace module used twice, as F.relu, and as torch.relu."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.c1 = nn.Conv2d(2, 4, 3)
        self.c2 = nn.Conv2d(4, 4, 3)
        self.c3 = nn.Conv2d(4, 3, 3)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.relu(self.c1(x))
        x = F.relu(self.c2(x))
        x = self.relu(self.c3(x))
        return torch.relu(x - 0.01)


def deconv_by_hand(net: ThreeWays, x: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """Deconvnet written out: rectify, then transposed filter, layer by layer (no autograd)."""
    g = F.relu(seed)                                    # torch.relu
    g = F.relu(g)                                       # self.relu after c3
    g = F.conv_transpose2d(g, net.c3.weight)
    g = F.relu(g)                                       # F.relu after c2
    g = F.conv_transpose2d(g, net.c2.weight)
    g = F.relu(g)                                       # self.relu after c1
    return F.conv_transpose2d(g, net.c1.weight)


def test_deconvnet_rule_matches_hand_computation_for_all_relu_forms():
    net = ThreeWays().eval()
    x = torch.randn(1, 2, 9, 9, requires_grad=True)
    seed = torch.randn(1, 3, 3, 3)
    with apply_rule(net, "deconvnet"):
        out = net(x)
        (grad,) = torch.autograd.grad(out, x, seed)
    torch.testing.assert_close(grad, deconv_by_hand(net, x, seed), rtol=1e-5, atol=1e-6)
    # forward outputs are bit-identical with and without the rule
    with torch.no_grad():
        assert torch.equal(out.detach(), net(x.detach().clone()))


def test_gradient_rule_is_plain_autograd():
    net = ThreeWays().eval()
    x = torch.randn(1, 2, 9, 9)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    with apply_rule(net, "gradient"):
        (ga,) = torch.autograd.grad(net(a).sum(), a)
    (gb,) = torch.autograd.grad(net(b).sum(), b)
    torch.testing.assert_close(ga, gb)


def test_guided_rule_masks_by_forward_and_backward_sign():
    x = torch.tensor([-1.0, 2.0, 3.0, -4.0], requires_grad=True)
    net = nn.Sequential(nn.ReLU())
    with apply_rule(net, "guided"):
        (g,) = torch.autograd.grad(net(x), x, torch.tensor([1.0, -1.0, 2.0, 5.0]))
    assert g.tolist() == [0.0, 0.0, 2.0, 0.0]
    with apply_rule(net, "deconvnet"):
        (g,) = torch.autograd.grad(net(x), x, torch.tensor([1.0, -1.0, 2.0, 5.0]))
    assert g.tolist() == [1.0, 0.0, 2.0, 5.0]
    with apply_rule(net, "pass"):
        (g,) = torch.autograd.grad(net(x), x, torch.tensor([1.0, -1.0, 2.0, 5.0]))
    assert g.tolist() == [1.0, -1.0, 2.0, 5.0]


@pytest.mark.parametrize("name", ["vgg11", "resnet18"])
@pytest.mark.parametrize("rule", ["deconvnet", "guided"])
def test_rules_match_captum(make_model, name, rule):
    import warnings

    from captum.attr import Deconvolution, GuidedBackprop

    model = make_model(name)
    x = torch.randn(1, 3, 64, 64)
    inp = x.clone().requires_grad_()
    with apply_rule(model, rule):
        (ours,) = torch.autograd.grad(model(inp)[0, 3], inp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cls = Deconvolution if rule == "deconvnet" else GuidedBackprop
        theirs = cls(model).attribute(x.clone(), target=3)
    cos = F.cosine_similarity(ours.flatten(), theirs.flatten(), dim=0)
    assert cos > 0.9999


def test_rule_is_scoped_to_its_model():
    a, b = nn.Sequential(nn.ReLU()), nn.Sequential(nn.ReLU())
    x = torch.tensor([-1.0, 1.0], requires_grad=True)
    with apply_rule(a, "deconvnet"):
        (g,) = torch.autograd.grad(b(x), x, torch.tensor([-3.0, -3.0]))
    assert g.tolist() == [0.0, -3.0]  # b keeps plain gradients


def test_lrn_pass_through_and_batchnorm_gradient():
    lrn = nn.LocalResponseNorm(3)
    bn = nn.BatchNorm2d(2).eval()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([2.0, -3.0]))
        bn.running_var.copy_(torch.tensor([4.0, 9.0]))
    x = torch.rand(1, 2, 3, 3) + 0.5
    seed = torch.randn(1, 2, 3, 3)
    xi = x.clone().requires_grad_()
    with apply_rule(lrn, "deconvnet"):
        (g,) = torch.autograd.grad(lrn(xi), xi, seed)
    torch.testing.assert_close(g, seed)  # LRN: pass-through
    with apply_rule(bn, "deconvnet"):
        (g,) = torch.autograd.grad(bn(xi), xi, seed)
    scale = torch.tensor([2.0, -3.0]) / torch.sqrt(torch.tensor([4.0, 9.0]) + bn.eps)
    torch.testing.assert_close(g, seed * scale.view(1, 2, 1, 1))  # BatchNorm: its transposed (1x1) filter
    with apply_rule(bn, RULES["deconvnet"].but(batchnorm="pass")):
        (g,) = torch.autograd.grad(bn(xi), xi, seed)
    torch.testing.assert_close(g, seed)


def test_batched_backward_with_vmap():
    net = ThreeWays().eval()
    x = torch.randn(1, 2, 9, 9, requires_grad=True)
    seeds = torch.randn(4, 1, 3, 3, 3)
    with apply_rule(net, "deconvnet"):
        out = net(x)
        (batched,) = torch.autograd.grad(out, x, seeds, is_grads_batched=True)
    for i in range(4):
        torch.testing.assert_close(batched[i], deconv_by_hand(net, x, seeds[i]), rtol=1e-5, atol=1e-6)


def test_unknown_rule():
    with pytest.raises(IntrospectError, match="unknown rule"):
        with apply_rule(nn.ReLU(), "deconv"):
            pass
    with pytest.raises(IntrospectError):
        Rule("x", relu="nope")
