"""Running an occluder sweep: incremental inference or batched whole passes, whichever costs less.

Incremental inference (:mod:`introspect.core.incremental`) computes only the part of each layer an
occluder can change, but it pays for it: every changed window is gathered from the clean map with
the windows of the layer below pasted in. On a plain convnet (ZFNet, VGG, ResNet) the saving wins by
far; where windows grow quickly and the model is many thin layers (DenseNet's concatenations) the
gathering can cost more than the multiply-adds it saves. The **cost model** decides per model and
geometry:

* the **work fraction** ``f`` is read from the plan: the multiply-adds of convolutions and linear
  layers that incremental inference computes, over those of one whole pass per position;
* ``f <= INCREMENTAL_BELOW`` (0.4): incremental inference, no measurement needed;
* ``f >= FULL_ABOVE`` (0.9): whole passes (at most 10 % to save, less than the gathering costs);
* in between, the **gathering overhead is measured**: positions at the start of the sweep run
  incrementally and positions at its end as whole passes (each path ``k`` untimed positions for its
  one-time costs, then ``k`` timed); the overhead per position is ``t_incremental - f * t_full``,
  and the rest of the sweep takes the faster path. The probes are real positions of the sweep, so
  measuring costs nothing beyond the slower probe.

Both paths give the same numbers (to float rounding), so the choice changes the time, never the result.
:class:`SweepRunner` serves ``introspect.occlusion`` and ``introspect.captum.Occlusion``.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from introspect.core.incremental import IncrementalModel, State, Step, Sweep
from introspect.core.layers import resolve_layer

#: Work fractions at or below this run incrementally without measuring.
INCREMENTAL_BELOW = 0.4
#: Work fractions at or above this run whole passes without measuring.
FULL_ABOVE = 0.9
#: Memory for the windows and patches of one batch when no batch size is given.
AUTO_BATCH_BYTES = 512 * 2 ** 20
#: Positions per batch of whole forward passes when no batch size is given.
FULL_BATCH = 64
PATHS = ("auto", "incremental", "full")


#: The automatic batch leaves at least this many batches in a sweep (of at least
#: :data:`MIN_AUTO_BATCH` positions each), so that progress moves while a long sweep runs.
PROGRESS_BATCHES, MIN_AUTO_BATCH = 16, 8
#: Positions per incremental batch when nothing reports progress (measured, one thread: ZFNet's Fig. 7
#: sweep takes 0.75x the time of 23-position batches; larger batches leave the caches and slow the
#: gathering more than they save on weight reads).
QUIET_BATCH = 64


def auto_batch_size(bytes_per_position: int | None, positions: int, budget: int | None = None,
                    reporting: bool = True) -> int:
    """Positions per batch: as many as fit in ``budget`` bytes (default :data:`AUTO_BATCH_BYTES`; at
    most 512, at least 1); :data:`FULL_BATCH` when the size of a position is unknown (whole passes).
    With ``reporting`` (a progress callback listens) at most a :data:`PROGRESS_BATCHES`-th of the
    sweep (not below :data:`MIN_AUTO_BATCH`), so progress is reported at least 16 times during a long
    sweep; without it, up to :data:`QUIET_BATCH` (fewer reads of large weights: ZFNet's fully
    connected layers read 150 MB of weights per batch)."""
    share = max(MIN_AUTO_BATCH, -(-positions // PROGRESS_BATCHES)) if reporting else QUIET_BATCH
    if bytes_per_position is None:
        return max(1, min(FULL_BATCH, positions, share))
    budget = AUTO_BATCH_BYTES if budget is None else budget
    return int(max(1, min(512, positions, share, budget // bytes_per_position)))


def prepare_engine(model: nn.Module, x: torch.Tensor, logits: torch.Tensor, layer_names: Sequence[str] = (),
                   clean_layers: dict | None = None) -> tuple[IncrementalModel | None, str | None]:
    """An :class:`IncrementalModel` of ``model`` at image ``x`` (``1 x C x H x W``) checked against
    the model's own ``logits`` (and the hooked outputs ``clean_layers`` of ``layer_names``), or
    ``(None, reason)`` when the model cannot run incrementally (whole passes are still exact)."""
    leaves: list[str] = []
    bad: list[str] = []
    for _ in range(2):
        try:
            engine = IncrementalModel(model, x, list(layer_names), leaves)
        except Exception as exc:  # untraceable code, unusual outputs: whole passes are still exact
            return None, f"{type(exc).__name__}: {exc}".splitlines()[0]
        out = engine.logits
        if not isinstance(out, torch.Tensor) or out.shape != logits.shape or not torch.allclose(
                out, logits, rtol=1e-4, atol=1e-5 * float(logits.abs().max()) + 1e-6):
            return None, "the traced graph does not reproduce the model's output"
        bad = engine.check_layers(clean_layers or {})
        if not bad:
            return engine, None
        leaves = bad
    return None, f"layer {bad[0]!r} could not be located in the traced graph"


def work(engine: IncrementalModel, steps: dict, count: int) -> dict:
    """Multiply-adds of convolutions and linear layers: computed incrementally vs whole passes, for
    ``count`` positions, and their ratio ``work_fraction``."""
    full = done = 0
    for node, step in steps.items():
        macs = _node_macs(engine, node)
        if not macs:
            continue
        out = engine.cache[node]
        per_unit = macs / max(1, out[0, 0].numel() if out.dim() == 4 else 1)
        full += macs * count
        if step.kind == "full":
            done += macs * count
        elif step.kind == "win":
            done += per_unit * step.window.area * count
    return {"macs_full": int(full), "macs_incremental": int(done),
            "work_fraction": round(done / full, 4) if full else None}


def _node_macs(engine: IncrementalModel, node) -> int:
    """Multiply-adds of one image through a convolution or linear node (0 for anything else)."""
    if node.op != "call_module":
        return 0
    module = engine.gm.get_submodule(node.target)
    out = engine.cache[node]
    if isinstance(module, nn.Conv2d):
        k = module.kernel_size[0] * module.kernel_size[1]
        return int(out[0].numel() * module.in_channels // module.groups * k)
    if isinstance(module, nn.Linear):
        return int(out[0].numel() * module.in_features)
    return 0


def probe_clock(device: torch.device) -> Callable[[], float]:
    """The clock of the probes: on the CPU with one torch thread, the CPU time of this thread (the
    work itself, however busy the machine is with other jobs); the wall clock otherwise."""
    if device.type == "cpu" and torch.get_num_threads() == 1:
        return time.thread_time
    return time.perf_counter


def choose(work_fraction: float | None, positions: int, probe: int) -> str:
    """The path the cost model takes before measuring: ``incremental``, ``full`` or ``probe``."""
    if work_fraction is None or work_fraction >= FULL_ABOVE:
        return "full"
    if work_fraction <= INCREMENTAL_BELOW:
        return "incremental"
    if positions < 6 * probe:  # too few positions to measure: the work decides
        return "incremental" if work_fraction < 0.6 else "full"
    return "probe"


def whole_pass_layout(batch: torch.Tensor) -> torch.Tensor:
    """The batch of a whole pass in the layout its convolutions run fastest in: channels-last for
    float32 images on the CPU (oneDNN's convolutions: 1.25x on ResNet18, 1.5x on DenseNet121 at one
    thread), unchanged elsewhere. Every operation gives the same numbers in both layouts (to float
    rounding), and outputs are handed on contiguous."""
    if batch.dim() == 4 and batch.device.type == "cpu" and batch.dtype == torch.float32:
        return batch.contiguous(memory_format=torch.channels_last)
    return batch


def sweep_geometry(x: torch.Tensor, sweep: Sweep, layers: Sequence[str] = (), batch_size: int | None = None,
                   full_batch_size: int | None = None) -> tuple:
    """What the cost model's measurement depends on besides the model: the key of a
    :class:`SweepRunner`'s ``decisions``."""
    return (tuple(x.shape), x.dtype, str(x.device), sweep.box, tuple(sweep.ys.tolist()), tuple(sweep.xs.tolist()),
            sweep.patches is not None, tuple(layers), batch_size, full_batch_size, torch.get_num_threads())


@dataclass
class SweepRunner:
    """Runs every position of ``sweep`` over image ``x`` and returns the model's outputs.

    Args:
        model (nn.Module): the model (eval mode; the caller holds it there).
        x (Tensor): ``1 x C x H x W`` clean image on the model's device.
        fill (Tensor): ``1 x C x H x W`` what the occluder holds (ignored where ``sweep.patches``).
        sweep (Sweep): the positions.
        engine (IncrementalModel | None): from :func:`prepare_engine`; ``None``: whole passes only.
        layers (sequence of str): module names whose outputs ``readout`` receives per batch.
        readout (callable | None): ``readout(name, state, batch)`` with a :class:`State` (``win`` or
            ``full``) of each layer in ``layers``, batch by batch in position order.
        tau (float | None): approximate mode (incremental only).
        batch_size (int | None): positions per call; default from the memory budget.
        full_batch_size (int | None): positions per whole-pass call when ``batch_size`` is not given
            (default :data:`FULL_BATCH`).
        decisions (dict | None): the caller's memo of measured choices (sweep geometry -> path and
            figures): a sweep whose image size, boxes, layers, batch sizes and thread count were
            measured before on this model takes that path without probing again (the next image, the
            next call of one ``introspect.captum.Occlusion``). Results never depend on the choice.

    Attributes (after :meth:`run`):
        path (str): ``incremental``, ``full``, or ``mixed`` (the probes ran both; each position once).
        chosen (str): the path the rest of the sweep took.
        stats (dict): work fraction, batch sizes and, when measured, seconds per position of both paths
            and the gathering overhead.
    """

    model: nn.Module
    x: torch.Tensor
    fill: torch.Tensor
    sweep: Sweep
    engine: IncrementalModel | None = None
    layers: Sequence[str] = ()
    readout: Callable[[str, State, int], None] | None = None
    tau: float | None = None
    batch_size: int | None = None
    full_batch_size: int | None = None
    decisions: dict | None = None
    path: str = ""
    chosen: str = ""
    stats: dict = field(default_factory=dict)
    _held: list = field(default_factory=list, repr=False)

    def __post_init__(self):
        self.steps: dict | None = self.engine.plan(self.sweep, self.tau) if self.engine is not None else None

    @property
    def positions(self) -> int:
        return len(self.sweep.ys)

    def incremental_batch(self, reporting: bool = True) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return auto_batch_size(self.engine.bytes_per_position(self.steps), self.positions, reporting=reporting)

    def full_batch(self, reporting: bool = True) -> int:
        if self.batch_size is not None:
            return self.batch_size
        if self.full_batch_size is not None:
            return max(1, min(self.full_batch_size, self.positions))
        return auto_batch_size(None, self.positions, reporting=reporting)

    def run(self, path: str = "auto", progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """``P x ...`` outputs of all positions; ``path`` ``auto`` (the cost model), ``incremental``
        or ``full``."""
        n = self.positions
        if self.engine is None:
            path = "full"
        wf = work(self.engine, self.steps, 1)["work_fraction"] if self.engine is not None else None
        self.stats = {"work_fraction": wf}
        if self.engine is not None:
            self.stats.update(work(self.engine, self.steps, n))
        probe = max(2, min(8, n // 12))
        plan = path if path != "auto" else ("incremental" if self.tau is not None else choose(wf, n, probe))
        known = self.decisions.get(self._geometry()) if self.decisions is not None else None
        if known is not None and (plan == "probe" or self.engine is None):
            plan = known[0] if plan == "probe" else plan
            self.stats.update(known[1], decision="measured on an earlier sweep")
        reporting = progress is not None or self.readout is not None
        if plan == "incremental":
            bs = self.incremental_batch(reporting)
            self.engine.precompute(self.steps, bs)
            self.path = self.chosen = "incremental"
            self.stats["batch_size"] = bs
            return torch.cat(self._incremental(0, n, bs, progress))
        if plan == "full":
            bs = self.full_batch(reporting)
            self.path = self.chosen = "full"
            self.stats["batch_size"] = bs
            return torch.cat(self._full(0, n, bs, progress))
        return self._probed(probe, progress, reporting)

    def _probed(self, k: int, progress, reporting: bool = True) -> torch.Tensor:
        """Measure both paths on real positions, then run the rest with the faster. Each path first
        runs ``k`` positions untimed (its one-time costs: kernels for new shapes, allocations), then
        ``k`` timed: incremental at the start of the sweep, whole passes at its end."""
        n = self.positions
        clock = probe_clock(self.x.device)
        head = self._incremental(0, k, k, progress)
        start = clock()
        head += self._incremental(k, 2 * k, k, progress)
        t_inc = (clock() - start) / k
        tail = self._full(n - 2 * k, n - k, k, progress, hold=True)
        start = clock()
        tail += self._full(n - k, n, k, progress, hold=True)
        t_full = (clock() - start) / k
        wf = self.stats["work_fraction"]
        self.stats.update({"probe_positions": 4 * k, "incremental_s_per_position": round(t_inc, 6),
                           "full_s_per_position": round(t_full, 6),
                           "gather_overhead_s_per_position": round(t_inc - wf * t_full, 6)})
        self.chosen = "incremental" if t_inc <= t_full else "full"
        self.path = "mixed"
        measured = {key: self.stats[key] for key in ("incremental_s_per_position", "full_s_per_position",
                                                      "gather_overhead_s_per_position")}
        if self.decisions is not None:
            self.decisions[self._geometry()] = (self.chosen, measured)
        if self.chosen == "incremental":
            bs = self.incremental_batch(reporting)
            middle = self._incremental(2 * k, n - 2 * k, bs, progress)
        else:
            bs = self.full_batch(reporting)
            middle = self._full(2 * k, n - 2 * k, bs, progress)
        self.stats["batch_size"] = bs
        self._flush_readouts()
        return torch.cat(head + middle + tail)

    def _geometry(self) -> tuple:
        return sweep_geometry(self.x, self.sweep, self.layers, self.batch_size, self.full_batch_size)

    # -- the two paths ------------------------------------------------------------------------------
    def _incremental(self, a0: int, b0: int, bs: int, progress) -> list[torch.Tensor]:
        bounds = [(a, min(b0, a + bs)) for a in range(a0, b0, bs)]
        first = self.engine.tail(self.steps) if self.readout is None and len(bounds) > 1 else None
        if first is not None and self.engine.tail_bytes_per_position(self.steps, first) * (b0 - a0) \
                <= AUTO_BATCH_BYTES:
            return [self.engine.run_batches(self.steps, self.fill, bounds, first, progress)]
        outs = []
        for a, b in bounds:
            with torch.no_grad():
                outs.append(self.engine.run(self.steps, self.fill, a, b, self.readout))
            if progress is not None:
                progress(b - a)
        return outs

    def _full(self, a0: int, b0: int, bs: int, progress, hold: bool = False) -> list[torch.Tensor]:
        """Whole forward passes of batches of occluded images; layer outputs by forward hooks (a module
        called twice per pass gives its last output). With ``hold`` (the probe at the end of the sweep)
        the readouts wait in ``_held`` until the positions before them are read out, so ``readout``
        always sees the positions in order."""
        outs = []
        seen: dict[str, torch.Tensor] = {}
        with contextlib.ExitStack() as stack:
            for name in self.layers if self.readout is not None else ():
                module = resolve_layer(self.model, name)[1]

                def hook(module, inputs, output, name=name):  # a copy: an inplace ReLU may come next
                    value = output[0] if isinstance(output, (tuple, list)) else output
                    seen[name] = value.detach().clone(memory_format=torch.contiguous_format)
                stack.callback(module.register_forward_hook(hook).remove)
            for a in range(a0, b0, bs):
                b = min(b0, a + bs)
                batch = whole_pass_layout(self.sweep.occluded(self.x, self.fill, a, b))
                seen.clear()
                with torch.no_grad():
                    out = self.model(batch)
                outs.append(out.contiguous() if isinstance(out, torch.Tensor) else out)
                for name in self.layers if self.readout is not None else ():
                    state = State("full", seen[name], None)
                    if hold:
                        self._held.append((name, state, b - a))
                    else:
                        self.readout(name, state, b - a)
                if progress is not None:
                    progress(b - a)
        return outs

    def _flush_readouts(self) -> None:
        for name, state, batch in self._held:
            self.readout(name, state, batch)
        self._held.clear()


__all__ = ["SweepRunner", "sweep_geometry", "prepare_engine", "work", "choose", "auto_batch_size", "probe_clock",
           "whole_pass_layout", "Sweep", "State", "Step", "IncrementalModel", "QUIET_BATCH", "AUTO_BATCH_BYTES",
           "INCREMENTAL_BELOW", "FULL_ABOVE", "PATHS"]
