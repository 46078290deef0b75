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


def test_an_instance_measures_a_geometry_once(model, image, monkeypatch):
    """introspect.captum.Occlusion keeps the cost model's measurement: the next call of the same
    geometry takes the measured path without probing, and gives the same attributions; another
    geometry is measured anew."""
    from introspect.captum import Occlusion

    monkeypatch.setattr(sweep_mod, "INCREMENTAL_BELOW", 0.0)
    monkeypatch.setattr(sweep_mod, "FULL_ABOVE", 1.01)
    probes = []
    real = sweep_mod.SweepRunner._probed
    monkeypatch.setattr(sweep_mod.SweepRunner, "_probed", lambda self, *a: probes.append(1) or real(self, *a))
    occ = Occlusion(model)
    kwargs = dict(sliding_window_shapes=(3, 12, 12), strides=(3, 4, 4), target=2)
    first = occ.attribute(image, **kwargs)
    assert occ.last_path == "mixed" and len(probes) == 1
    chosen = occ.last_stats["chosen"]
    second = occ.attribute(image, **kwargs)
    assert len(probes) == 1 and occ.last_path == chosen
    assert occ.last_stats["decision"] == "measured on an earlier sweep"
    assert occ.last_stats["incremental_s_per_position"] > 0
    torch.testing.assert_close(second, first, rtol=1e-5, atol=1e-6)
    occ.attribute(image, sliding_window_shapes=(3, 10, 10), strides=(3, 4, 4), target=2)
    assert len(probes) == 2 and occ.last_path == "mixed"
    # a fresh instance measures again
    Occlusion(model).attribute(image, **kwargs)
    assert len(probes) == 3


def test_quiet_sweeps_take_larger_batches():
    """Progress reported: at least 16 batches; nobody listening: up to QUIET_BATCH per batch; memory
    bounds both."""
    assert sweep_mod.auto_batch_size(1000, 361) == 23  # ceil(361 / 16)
    assert sweep_mod.auto_batch_size(1000, 361, reporting=False) == sweep_mod.QUIET_BATCH
    assert sweep_mod.auto_batch_size(2 ** 25, 361, reporting=False) == 16  # 512 MB / 32 MB
    assert sweep_mod.auto_batch_size(None, 361, reporting=False) == sweep_mod.FULL_BATCH


def test_whole_passes_run_channels_last_with_the_same_numbers(model, image):
    batch = image.repeat(3, 1, 1, 1)
    fast = sweep_mod.whole_pass_layout(batch)
    assert fast.is_contiguous(memory_format=torch.channels_last) and torch.equal(fast, batch)
    with torch.no_grad():
        torch.testing.assert_close(model(fast), model(batch), rtol=1e-5, atol=1e-6)
    assert sweep_mod.whole_pass_layout(batch.double()).is_contiguous()  # float64: left as it is


def test_the_probe_clock_is_cpu_time_on_one_cpu_thread(one_thread):
    import time

    assert sweep_mod.probe_clock(torch.device("cpu")) is time.thread_time
    assert sweep_mod.probe_clock(torch.device("meta")) is time.perf_counter
