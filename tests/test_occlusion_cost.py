"""The occlusion cost model: incremental inference or batched whole passes, and the same maps either way."""
from __future__ import annotations

import pytest
import torch

import introspect.core.sweep as sweep_mod
from introspect.core.sweep import FULL_ABOVE, INCREMENTAL_BELOW, choose
from introspect.models import ModelMeta, zfnet
from introspect_occlusion.method import occlusion


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = zfnet(num_classes=6, widths=(16, 32, 32, 32, 16), fc=32, pool5_size=1).eval()
    net.introspect_meta = ModelMeta(arch="zfnet", input_size=(3, 64, 64))
    return net


@pytest.fixture(scope="module")
def image():
    torch.manual_seed(1)
    return torch.randn(1, 3, 64, 64)


def test_thresholds_decide_without_measuring_at_the_ends():
    assert choose(INCREMENTAL_BELOW, 1000, 16) == "incremental"
    assert choose(FULL_ABOVE, 1000, 16) == "full"
    assert choose(None, 1000, 16) == "full"
    assert choose(0.6, 1000, 16) == "probe"
    # too few positions to measure: the work fraction alone decides
    assert choose(0.5, 90, 16) == "incremental" and choose(0.7, 90, 16) == "full"


def test_a_measured_sweep_gives_the_maps_of_whole_passes(model, image, monkeypatch):
    """Both probes and the rest of the sweep are real positions: every map equals whole passes, and the
    measured times and overhead are reported."""
    monkeypatch.setattr(sweep_mod, "INCREMENTAL_BELOW", 0.0)
    monkeypatch.setattr(sweep_mod, "FULL_ABOVE", 1.01)
    probed = occlusion(model, image, size=12, stride=4, targets=[0, 3], layers=["conv2", "conv5"],
                       project=False, batch_size=7)
    full = occlusion(model, image, size=12, stride=4, targets=[0, 3], layers=["conv2", "conv5"],
                     project=False, incremental=False, batch_size=7)
    assert probed.mode == "mixed" and full.mode == "full"
    stats = probed.stats
    assert stats["chosen"] in ("incremental", "full")
    k = stats["probe_positions"]
    assert 8 <= k <= 32 and stats["incremental_s_per_position"] > 0 and stats["full_s_per_position"] > 0
    assert stats["gather_overhead_s_per_position"] == pytest.approx(
        stats["incremental_s_per_position"] - stats["work_fraction"] * stats["full_s_per_position"], abs=2e-6)
    torch.testing.assert_close(probed.prob, full.prob, rtol=0, atol=1e-5)
    torch.testing.assert_close(
        probed.activation, full.activation, rtol=1e-4, atol=1e-4 * float(full.activation.abs().max())
    )
    assert torch.equal(probed.label, full.label)


@pytest.mark.parametrize("winner", ["incremental", "full"])
def test_the_faster_probe_runs_the_rest(model, image, monkeypatch, winner):
    monkeypatch.setattr(sweep_mod, "INCREMENTAL_BELOW", 0.0)
    monkeypatch.setattr(sweep_mod, "FULL_ABOVE", 1.01)
    real_inc, real_full = sweep_mod.SweepRunner._incremental, sweep_mod.SweepRunner._full
    calls = []

    def slow(fn, name):
        def wrapped(self, a0, b0, *args, **kwargs):
            calls.append((name, a0, b0))
            if name != winner and len(calls) <= 4:
                import time
                time.sleep(0.05 * (b0 - a0))
            return fn(self, a0, b0, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(sweep_mod.SweepRunner, "_incremental", slow(real_inc, "incremental"))
    monkeypatch.setattr(sweep_mod.SweepRunner, "_full", slow(real_full, "full"))
    result = occlusion(model, image, size=12, stride=4, project=False)
    n = result.stats["positions"]
    k = result.stats["probe_positions"] // 4
    assert calls == [("incremental", 0, k), ("incremental", k, 2 * k), ("full", n - 2 * k, n - k),
                     ("full", n - k, n), (winner, 2 * k, n - 2 * k)]
    assert result.stats["chosen"] == winner
