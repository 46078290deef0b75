"""Rules for every activation type against explicit backward passes written by hand.

Each reference replaces the activation by a ``torch.autograd.Function`` whose backward applies the
documented rule with the activation's derivative written out (no autograd inside), so the rules of
:mod:`introspect.core.rules` are checked against an independent computation.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from introspect.core import RULES, apply_rule
from introspect.core.rules import ACTIVATIONS, choice_note, parse_activation_rules, rules_table
from introspect.errors import IntrospectError

SLOPE, LOW, HIGH = 0.2, 0.1, 0.3
PRELU_W = torch.tensor([0.25, -0.5, 0.1, 0.3])


def _sig(x):
    return 1 / (1 + torch.exp(-x))


def _phi(x):
    return torch.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def _gelu_tanh_d(x):
    k = math.sqrt(2 / math.pi)
    t = torch.tanh(k * (x + 0.044715 * x ** 3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x)


def _mish_d(x):
    sp = torch.log1p(torch.exp(x))
    t = torch.tanh(sp)
    return t + x * (1 - t * t) * _sig(x)


def _prelu_slope(x):
    return PRELU_W.view(1, -1, 1, 1) if x.dim() == 4 else PRELU_W.view(1, -1)


# key -> (module, functional form, derivative f'(x) written out, signal rectifier written out)
def _leaky_signal(a):
    return lambda g: torch.where(g > 0, g, a * g)


CASES = {
    "relu": (lambda: nn.ReLU(), F.relu, lambda x: (x > 0).float(), None),
    "relu6": (lambda: nn.ReLU6(), F.relu6, lambda x: ((x > 0) & (x < 6)).float(), None),
    "leaky_relu": (lambda: nn.LeakyReLU(SLOPE), lambda x: F.leaky_relu(x, SLOPE),
                   lambda x: torch.where(x > 0, 1.0, SLOPE), _leaky_signal(SLOPE)),
    "prelu": (None, lambda x: F.prelu(x, PRELU_W), lambda x: torch.where(x > 0, torch.ones(()), _prelu_slope(x)),
              "prelu"),
    "rrelu": (lambda: nn.RReLU(LOW, HIGH), lambda x: F.rrelu(x, LOW, HIGH),
              lambda x: torch.where(x > 0, 1.0, (LOW + HIGH) / 2), _leaky_signal((LOW + HIGH) / 2)),
    "hardtanh": (lambda: nn.Hardtanh(), F.hardtanh, lambda x: ((x > -1) & (x < 1)).float(), None),
    "elu": (lambda: nn.ELU(0.7), lambda x: F.elu(x, 0.7), lambda x: torch.where(x > 0, 1.0, 0.7 * torch.exp(x)), None),
    "celu": (lambda: nn.CELU(0.7), lambda x: F.celu(x, 0.7), lambda x: torch.where(x > 0, 1.0, torch.exp(x / 0.7)),
             None),
    "selu": (lambda: nn.SELU(), F.selu,
             lambda x: 1.0507009873554805 * torch.where(x > 0, 1.0, 1.6732632423543772 * torch.exp(x)), None),
    "silu": (lambda: nn.SiLU(), F.silu, lambda x: _sig(x) * (1 + x * (1 - _sig(x))), None),
    "gelu": (lambda: nn.GELU(), F.gelu, lambda x: 0.5 * (1 + torch.erf(x / math.sqrt(2))) + x * _phi(x), None),
    "hardswish": (lambda: nn.Hardswish(), F.hardswish,
                  lambda x: torch.where(x < -3, 0.0, torch.where(x > 3, 1.0, (2 * x + 3) / 6)), None),
    "mish": (lambda: nn.Mish(), F.mish, _mish_d, None),
    "softplus": (lambda: nn.Softplus(2.0), lambda x: F.softplus(x, 2.0), lambda x: _sig(2.0 * x), None),
    "sigmoid": (lambda: nn.Sigmoid(), torch.sigmoid, lambda x: _sig(x) * (1 - _sig(x)), None),
    "hardsigmoid": (lambda: nn.Hardsigmoid(), F.hardsigmoid, lambda x: ((x > -3) & (x < 3)).float() / 6, None),
    "tanh": (lambda: nn.Tanh(), torch.tanh, lambda x: 1 - torch.tanh(x) ** 2, None),
}
GELU_TANH = (lambda: nn.GELU("tanh"), lambda x: F.gelu(x, approximate="tanh"), _gelu_tanh_d, None)


def _signal(case, x):
    signal = case[3]
    if signal is None:
        return lambda g: torch.clamp(g, min=0)
    if signal == "prelu":
        w = _prelu_slope(x)
        return lambda g: torch.where(g > 0, g, w * g)
    return signal


def reference(case, kind):
    """The activation with the documented rule as an explicit autograd.Function."""
    forward, derivative = case[1], case[2]

    class Ref(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            with torch.no_grad():
                return forward(x)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            if kind == "deconvnet":
                return _signal(case, x)(g)
            if kind == "guided":
                return _signal(case, x)(g) * derivative(x)
            if kind == "gradient":
                return g * derivative(x)
            return g

    return Ref.apply


class Net(nn.Module):
    """conv -> act -> conv -> act -> linear; ``act`` a module (used twice) or a function."""

    def __init__(self, act, channels=4):
        super().__init__()
        torch.manual_seed(3)
        self.c1 = nn.Conv2d(2, channels, 3)
        self.c2 = nn.Conv2d(channels, channels, 3)
        self.fc = nn.Linear(channels * 3 * 3, 5)
        self.act = act

    def forward(self, x):
        x = self.act(self.c1(x))
        x = self.act(self.c2(x))
        return self.fc(x.flatten(1))


def _project(net, rule, x, seed, seen=None):
    inp = x.clone().requires_grad_()
    with apply_rule(net, rule, seen=seen):
        (g,) = torch.autograd.grad(net(inp), inp, seed)
    return g


def _inputs():
    gen = torch.Generator().manual_seed(7)
    return torch.randn(2, 2, 7, 7, generator=gen) * 2, torch.randn(2, 5, generator=gen)


def _case(key):
    return GELU_TANH if key == "gelu_tanh" else CASES[key]


def _module(key):
    case = _case(key)
    if key == "prelu":
        module = nn.PReLU(4)
        with torch.no_grad():
            module.weight.copy_(PRELU_W)
        return module
    return case[0]()


KEYS = [*CASES, "gelu_tanh"]


@pytest.mark.parametrize("kind", ["deconvnet", "guided", "gradient"])
@pytest.mark.parametrize("key", KEYS)
def test_rule_equals_hand_written_backward(key, kind):
    x, seed = _inputs()
    case = _case(key)
    ours = _project(Net(_module(key)).eval(), kind, x, seed)
    theirs = _project(Net(reference(case, kind)).eval(), "gradient", x, seed)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    if kind == "deconvnet" and key not in ("relu", "relu6"):
        # the rule is not silently the gradient
        grad = _project(Net(_module(key)).eval(), "gradient", x, seed)
        assert not torch.allclose(ours, grad, atol=1e-4)


@pytest.mark.parametrize("kind", ["deconvnet", "guided", "gradient", "pass"])
@pytest.mark.parametrize("key", KEYS)
def test_functional_and_module_forms_agree(key, kind):
    x, seed = _inputs()
    by_module = _project(Net(_module(key)).eval(), kind, x, seed)
    by_function = _project(Net(_case(key)[1]).eval(), kind, x, seed)
    torch.testing.assert_close(by_module, by_function, rtol=1e-5, atol=1e-6)


INPLACE = {
    "relu": lambda: nn.ReLU(inplace=True), "relu6": lambda: nn.ReLU6(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(SLOPE, inplace=True), "rrelu": lambda: nn.RReLU(LOW, HIGH, inplace=True),
    "elu": lambda: nn.ELU(0.7, inplace=True), "celu": lambda: nn.CELU(0.7, inplace=True),
    "selu": lambda: nn.SELU(inplace=True), "silu": lambda: nn.SiLU(inplace=True),
    "hardswish": lambda: nn.Hardswish(inplace=True), "mish": lambda: nn.Mish(inplace=True),
    "hardsigmoid": lambda: nn.Hardsigmoid(inplace=True), "hardtanh": lambda: nn.Hardtanh(inplace=True),
    "sigmoid": lambda: (lambda t: t.sigmoid_()), "tanh": lambda: (lambda t: torch.tanh_(t)),
}


@pytest.mark.parametrize("kind", ["deconvnet", "guided", "gradient"])
@pytest.mark.parametrize("key", sorted(INPLACE))
def test_inplace_forms_agree(key, kind):
    x, seed = _inputs()
    net = Net(INPLACE[key]()).eval()
    ours = _project(net, kind, x, seed)
    theirs = _project(Net(_module(key)).eval(), kind, x, seed)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # forward values unchanged by the rule
        with apply_rule(net, kind):
            a = net(x.clone())
        torch.testing.assert_close(a, Net(_module(key)).eval()(x.clone()))


def test_relu6_deconvnet_equals_relu_where_no_unit_exceeds_6():
    x, seed = _inputs()
    relu6, relu = Net(nn.ReLU6()).eval(), Net(nn.ReLU()).eval()
    with torch.no_grad():  # the precondition: every unit below 6
        assert float(F.relu(relu.c2(F.relu(relu.c1(x)))).max()) < 6
    for kind in ("deconvnet", "guided", "gradient"):
        torch.testing.assert_close(_project(relu6, kind, x, seed), _project(relu, kind, x, seed))
    big = x * 40  # units above 6: the gradient and guided rules differ, the deconvnet does not care
    with torch.no_grad():
        assert float(F.relu(relu.c1(big)).max()) > 6
    assert not torch.allclose(_project(relu6, "gradient", big, seed), _project(relu, "gradient", big, seed))
    torch.testing.assert_close(_project(relu6, "deconvnet", big, seed), _project(relu, "deconvnet", big, seed))


def test_per_type_change_with_but():
    x, seed = _inputs()
    net = Net(nn.SiLU()).eval()
    rule = RULES["deconvnet"].but(silu="gradient")
    torch.testing.assert_close(_project(net, rule, x, seed), _project(net, "gradient", x, seed))
    # other types keep the deconvnet rule
    relu_net = Net(nn.ReLU()).eval()
    torch.testing.assert_close(_project(relu_net, rule, x, seed), _project(relu_net, "deconvnet", x, seed))
    with pytest.raises(IntrospectError, match="unknown rule field"):
        RULES["deconvnet"].but(swish="gradient")
    with pytest.raises(IntrospectError, match="unknown rule 'nope' for SiLU"):
        RULES["deconvnet"].but(silu="nope")
    assert parse_activation_rules("deconvnet", ["SiLU=gradient", "gate=through"]) == rule.but(gate="through")
    with pytest.raises(IntrospectError, match="TYPE=RULE"):
        parse_activation_rules("deconvnet", ["swish"])


def test_seen_records_each_type_and_note_names_the_choices():
    x, seed = _inputs()
    seen: dict = {}
    _project(Net(nn.ReLU6()).eval(), "deconvnet", x, seed, seen)
    assert seen == {"ReLU6": "deconvnet"}
    assert choice_note(seen) is None  # the rectifier family follows the paper by definition
    _project(Net(F.gelu).eval(), "deconvnet", x, seed, seen)
    assert seen == {"ReLU6": "deconvnet", "GELU": "deconvnet"}
    note = choice_note(seen)
    assert "GELU" in note and "ReLU6" not in note and "--activation-rule gelu=gradient" in note
    seen = {}
    _project(Net(nn.GELU()).eval(), RULES["deconvnet"].but(gelu="gradient"), x, seed, seen)
    assert seen == {"GELU": "gradient"} and choice_note(seen) is None


class Squeeze(nn.Module):
    """A squeeze-and-excitation block as torchvision writes it: ``scale * x``."""

    def __init__(self, gate, expand=False):
        super().__init__()
        torch.manual_seed(5)
        self.expand = expand
        self.c1 = nn.Conv2d(2, 4, 3)
        self.fc1 = nn.Conv2d(4, 2, 1)
        self.fc2 = nn.Conv2d(2, 4, 1)
        self.gate = gate
        self.c2 = nn.Conv2d(4, 3, 3)

    def forward(self, x):
        x = F.relu(self.c1(x))
        scale = self.gate(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        if self.expand:  # as timm's ECA writes it
            return self.c2(x * scale.view(x.shape[0], -1, 1, 1).expand_as(x))
        return self.c2(scale * x)


@pytest.mark.parametrize("expand", [False, True])
@pytest.mark.parametrize("gate", [nn.Sigmoid(), nn.Hardsigmoid()])
def test_squeeze_excitation_gate_is_a_fixed_scale(gate, expand):
    net = Squeeze(gate, expand).eval()
    gen = torch.Generator().manual_seed(1)  # a case where the branch gets some signal
    x = torch.randn(1, 2, 8, 8, generator=gen)
    seed = torch.randn(1, 3, 4, 4, generator=gen)
    seen: dict = {}
    ours = _project(net, "deconvnet", x, seed, seen)
    with torch.no_grad():
        h = F.relu(net.c1(x))
        scale = gate(net.fc2(F.relu(net.fc1(F.adaptive_avg_pool2d(h, 1)))))
    by_hand = F.conv_transpose2d(F.relu(F.conv_transpose2d(seed, net.c2.weight) * scale), net.c1.weight)
    torch.testing.assert_close(ours, by_hand, rtol=1e-5, atol=1e-6)
    name = type(gate).__name__
    assert seen == {"ReLU": "deconvnet", f"{name} gate": "fixed"}
    assert f"{name} gate" in choice_note(seen)
    # gate=through: the signal also flows into the branch, through the gate's own rule
    signal = F.conv_transpose2d(seed, net.c2.weight)
    branch = F.relu((signal * h).sum((2, 3), keepdim=True))           # the gate's deconvnet rule
    branch = F.conv_transpose2d(F.relu(F.conv_transpose2d(branch, net.fc2.weight)), net.fc1.weight)
    below = signal * scale + branch.expand_as(h) / (h.shape[-2] * h.shape[-1])   # avg pool's transpose
    by_hand = F.conv_transpose2d(F.relu(below), net.c1.weight)
    through = _project(net, RULES["deconvnet"].but(gate="through"), x, seed)
    assert float(branch.detach().abs().sum()) > 0 and not torch.allclose(through, ours)
    torch.testing.assert_close(through, by_hand, rtol=1e-5, atol=1e-6)
    xi = x.clone().requires_grad_()
    (plain,) = torch.autograd.grad(net(xi), xi, seed)
    torch.testing.assert_close(_project(net, "gradient", x, seed), plain)


class Swishy(nn.Module):
    """A user's own activation: no rule is known for it."""

    def forward(self, x):
        return x * torch.sigmoid(x) + 0.1 * F.relu(x)


class Affine(nn.Module):
    """A learnable scale and shift (as hgnetv2's LearnableAffineBlock): not an activation."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.5))
        self.bias = nn.Parameter(torch.tensor(-0.2))

    def forward(self, x):
        return self.scale * x + self.bias


def test_affine_own_module_is_not_reported_as_an_activation():
    x, seed = _inputs()
    net = Net(nn.Sequential(Affine(), nn.ReLU())).eval()
    seen: dict = {}
    ours = _project(net, "deconvnet", x, seed, seen)
    assert seen == {"ReLU": "deconvnet"}
    affine, relu = Affine(), reference(CASES["relu"], "deconvnet")
    ref = Net(lambda t: relu(affine(t))).eval()
    torch.testing.assert_close(ours, _project(ref, "gradient", x, seed), rtol=1e-5, atol=1e-6)


def test_own_activation_gets_its_gradient_by_name():
    x, seed = _inputs()
    net = Net(Swishy()).eval()
    seen: dict = {}
    ours = _project(net, "deconvnet", x, seed, seen)
    xi = x.clone().requires_grad_()
    (plain,) = torch.autograd.grad(net(xi), xi, seed)
    torch.testing.assert_close(ours, plain)
    assert seen == {"Swishy": "gradient (no rule)"}
    assert "Swishy: no rule" in choice_note(seen)


def test_batched_backward_with_vmap_for_leaky_and_smooth_rules():
    x = torch.randn(1, 2, 7, 7)
    seeds = torch.randn(3, 1, 5)
    for act in (nn.LeakyReLU(0.1), _module("prelu"), nn.SiLU(), nn.GELU()):
        net = Net(act).eval()
        for kind in ("deconvnet", "guided"):
            inp = x.clone().requires_grad_()
            with apply_rule(net, kind):
                out = net(inp)
                (batched,) = torch.autograd.grad(out, inp, seeds, is_grads_batched=True)
            for i in range(3):
                torch.testing.assert_close(batched[i], _project(net, kind, x, seeds[i]), rtol=1e-5, atol=1e-6)


def test_readme_rules_table_matches_the_code():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert rules_table() in readme
    assert len(ACTIVATIONS) >= 18
