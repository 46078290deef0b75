"""Projections on networks with other activations than ReLU: the windowed fast path for the
rectifier family, the rules recorded in the result, and the CLI's one line about choices."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from click.testing import CliRunner
from PIL import Image
from torch import nn

import introspect
from introspect.cli import build_cli
from introspect.core import RULES
from introspect.core.rules import choice_note

pytestmark = pytest.mark.usefixtures("one_thread")


def rectifier_chain() -> nn.Module:
    torch.manual_seed(2)
    prelu = nn.PReLU(8)
    with torch.no_grad():
        prelu.weight.copy_(torch.linspace(-0.3, 0.4, 8))
    return nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=2, padding=2), nn.BatchNorm2d(8), nn.LeakyReLU(0.2, inplace=True),
        nn.MaxPool2d(3, 2, padding=1), nn.Conv2d(8, 8, 3, padding=1), prelu,
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU6(inplace=True), nn.Conv2d(8, 8, 3, padding=1),
        nn.RReLU(0.1, 0.3), nn.Conv2d(8, 6, 3, padding=1), nn.SiLU(),
    ).eval()


@pytest.mark.parametrize("layer", ["10", "9", "5"])
def test_chain_path_covers_the_rectifier_family(layer):
    model = rectifier_chain()
    x = torch.randn(2, 3, 40, 40)
    fast = introspect.project(model, x, layer=layer, maps=3, method="chain")
    slow = introspect.project(model, x, layer=layer, maps=3, method="autograd")
    assert fast.method == "chain" and slow.method == "autograd"
    torch.testing.assert_close(fast.projections, slow.projections, rtol=1e-4, atol=1e-5)
    assert fast.activation_rules == slow.activation_rules
    expected = {"5": {"LeakyReLU", "PReLU"}, "9": {"LeakyReLU", "PReLU", "ReLU6", "RReLU"},
                "10": {"LeakyReLU", "PReLU", "ReLU6", "RReLU"}}[layer]
    assert slow.activation_rules == dict.fromkeys(expected, "deconvnet")
    assert fast.projections.abs().sum() > 0


def test_smooth_activation_in_a_chain_and_a_changed_rule_takes_the_autograd_path():
    model = rectifier_chain()
    x = torch.randn(1, 3, 40, 40)
    fast = introspect.project(model, x, layer="11", maps=2, method="chain")
    slow = introspect.project(model, x, layer="11", maps=2, method="autograd")
    torch.testing.assert_close(fast.projections, slow.projections, rtol=1e-4, atol=1e-5)
    assert fast.activation_rules["SiLU"] == "deconvnet"
    assert "SiLU" in choice_note(fast.activation_rules)
    changed = introspect.project(model, x, layer="11", maps=2, rule=RULES["deconvnet"].but(silu="gradient"))
    assert changed.method == "autograd" and changed.activation_rules["SiLU"] == "gradient"
    assert changed.to_dict()["activation_rules"]["SiLU"] == "gradient"
    assert not torch.allclose(changed.projections, slow.projections)
    with pytest.raises(introspect.IntrospectError, match="chain path computes the deconvnet rule"):
        introspect.project(model, x, layer="11", rule=RULES["deconvnet"].but(silu="gradient"), method="chain")


def test_mobilenet_v2_chain_up_to_its_first_residual_block():
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=10).eval()
    with torch.no_grad():  # random BatchNorm statistics, so units cross 6 and go negative
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.uniform_(-0.5, 0.5)
                m.weight.uniform_(0.5, 3.0)
    x = torch.randn(1, 3, 48, 48)
    fast = introspect.project(model, x, layer="features.2", maps=2)
    slow = introspect.project(model, x, layer="features.2", maps=2, method="autograd")
    assert fast.method == "chain" and fast.activation_rules == {"ReLU6": "deconvnet"}
    torch.testing.assert_close(fast.projections, slow.projections, rtol=1e-4, atol=1e-5)
    residual = introspect.project(model, x, layer="features.4", maps=1)
    assert residual.method == "autograd" and residual.to_dict()["method"] == "autograd"


def test_cli_says_which_rules_are_choices(tmp_path):
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(image)
    runner = CliRunner()
    args = ["deconv", "--arch", "mobilenet_v3_small", str(image), "--layer", "features.1", "--top-maps", "1"]
    result = runner.invoke(build_cli(), [*args, "--out", str(tmp_path / "a")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "is a choice" in line]
    assert len(lines) == 1
    assert (
        "Hardswish" in lines[0]
        and "Hardsigmoid gate" in lines[0]
        and "--activation-rule hardswish=gradient" in lines[0]
    )
    doc = json.loads((tmp_path / "a" / "result.json").read_text())
    assert doc["layers"][0]["activation_rules"] == {"Hardswish": "deconvnet", "ReLU": "deconvnet",
                                                    "Hardsigmoid gate": "fixed"}
    changed = ["--activation-rule", "hardswish=gradient", "--activation-rule", "gate=through",
               "--activation-rule", "Hardsigmoid=gradient"]
    result = runner.invoke(build_cli(), [*args, *changed, "--out", str(tmp_path / "b")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "is a choice" not in result.stderr
    doc = json.loads((tmp_path / "b" / "result.json").read_text())
    assert doc["layers"][0]["activation_rules"] == {"Hardswish": "gradient", "ReLU": "deconvnet",
                                                    "Hardsigmoid": "gradient"}
    result = runner.invoke(build_cli(), [*args, "--activation-rule", "swish=gradient", "--out", str(tmp_path / "c")])
    assert result.exit_code != 0 and "TYPE=RULE" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "c").exists()


def test_top_k_records_the_rules_of_its_projections():
    model = rectifier_chain()
    data = torch.randn(5, 3, 40, 40)  # a tensor data set, N x C x H x W
    fast = introspect.top_k(model, data, layer="11", k=2, channels=[0, 3])
    slow = introspect.top_k(model, data, layer="11", k=2, channels=[0, 3], method="autograd")
    assert fast.method == "chain" and slow.method == "autograd"
    torch.testing.assert_close(fast.projections, slow.projections, rtol=1e-4, atol=1e-5)
    expected = dict.fromkeys(["LeakyReLU", "PReLU", "ReLU6", "RReLU", "SiLU"], "deconvnet")
    assert fast.activation_rules == slow.activation_rules == expected
    assert fast.to_dict()["activation_rules"] == expected


def test_top_command_says_which_rules_are_choices(tmp_path):
    from introspect.models import save_checkpoint

    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(num_classes=3)
    ckpt = save_checkpoint(tmp_path / "m.pt", model, arch="mobilenet_v3_small", arch_kwargs={"num_classes": 3},
                           input_size=(3, 64, 64))
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(data / f"{i}.png")
    result = CliRunner().invoke(build_cli(), ["top", str(ckpt), str(data), "--layer", "features.1", "--k", "1",
                                              "--channels", "0-1", "--out", str(tmp_path / "out")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "is a choice" in line]
    assert len(lines) == 1 and "Hardswish" in lines[0] and "Hardsigmoid gate" in lines[0]
    doc = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert doc["activation_rules"] == {"Hardswish": "deconvnet", "ReLU": "deconvnet", "Hardsigmoid gate": "fixed"}
