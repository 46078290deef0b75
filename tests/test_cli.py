"""Core commands: --version, models, layers (table and JSON), --help everywhere."""
from __future__ import annotations

import json

import conftest
from introspect import __version__
from introspect.cli import build_cli
from introspect.models import save_checkpoint, zfnet


def output(*args):
    result = conftest.invoke(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_version():
    assert output("--version").strip().endswith(__version__)


def test_every_command_has_help():
    cli = build_cli()
    for name in cli.commands:
        out = output(name, "--help")
        assert "Usage:" in out and "--help" in out


def test_models_lists_bundled_and_torchvision():
    rows = {r["name"]: r for r in json.loads(output("models", "--json"))}
    for name in ("zfnet", "alexnet", "alexnet_torchvision", "vgg16", "resnet18", "densenet121"):
        assert name in rows


def test_layers_of_a_zfnet_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "zf.pt", zfnet(num_classes=10), arch="zfnet", arch_kwargs={"num_classes": 10})
    text = output("layers", path)
    line = next(l for l in text.splitlines() if l.startswith("features.12"))
    assert line.split() == ["features.12", "conv5", "Conv2d", "256x13x13", "139x139", "16"]
    rows = {r["name"]: r for r in json.loads(output("layers", path, "--json"))}
    assert rows["features.0"]["output_shape"] == [96, 110, 110] and rows["features.0"]["alias"] == "conv1"
    assert rows["features.14"]["rf_size"] == [171, 171] and rows["classifier.6"]["is_global"]


def test_layers_with_arch_only():
    rows = json.loads(output("layers", "--arch", "resnet18", "--json"))
    assert {r["name"]: r["output_shape"] for r in rows}["layer4"] == [512, 7, 7]
