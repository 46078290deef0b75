"""``introspect.captum`` against ``captum.attr``: the same calls, the same results, side by side.

Four claims, each timed in interleaved rounds (introspect, captum, introspect, ...) so both meet the
same load, compared by medians; the script prints every round, the ratio, the absolute times and the
machine, and checks that both give the same attributions.

1. ``Occlusion`` on torchvision's ResNet18 at 224x224, window 32, stride 16 (169 positions);
2. ``Occlusion`` on the paper's ZFNet with the Fig. 7 geometry: window 50, stride 10 (captum's 361
   positions, the clipped last window included);
3. ``Occlusion`` on DenseNet121 at 160x160, window 32, stride 16 (the model where incremental
   inference alone was slower than captum: the cost model must not be);
4. ``NeuronDeconvolution`` over the 2,304 top-9 conv5 neurons of ZFNet (no LRN, where captum's
   gradient and the deconvnet coincide) over 48 photographs: one ``attribute(image, (c, y, x))`` call
   per neuron, the calls grouped by image (introspect keeps the forward pass while the same input
   comes back); captum is timed on ``--captum-calls`` of them, spread over the 2,304, and scaled.

captum's ``Occlusion`` runs with each ``perturbations_per_eval`` of ``--ppe`` (default ``1,16``: captum's
default call, which the one-line change replaces, and batches of 16, captum's fastest); introspect's
with its defaults. Every time is printed as wall clock and as CPU time of the process: with one
thread the CPU time measures the work itself on a machine shared with other jobs. Models have
seeded random weights, eval mode.

Usage: python benchmarks/bench_captum.py [--threads 1] [--rounds 3] [--ppe 1,16] [--captum-calls 60]
       [--cases resnet18,zfnet,densenet121,neuron]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings

import torch


def machine() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"torch {torch.__version__}, threads {torch.get_num_threads()}, load average {load[0]:.2f}")


#: CPU seconds of the last :func:`timed` call (this process; with one thread, the work itself however
#: busy the machine is, where the wall clock also counts the time other jobs held the core).
last_cpu = 0.0


def timed(fn):
    global last_cpu
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    last_cpu = time.process_time() - cpu
    return time.perf_counter() - start, out


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def occlusion_case(name: str, model, x, window: int, stride: int, rounds: int, ppes: list[int]) -> dict:
    """Ratios ``{ppe: (wall, cpu)}`` of captum's ``Occlusion`` at each ``perturbations_per_eval`` over
    introspect's, all timed in the same interleaved rounds."""
    from captum.attr import Occlusion as CaptumOcclusion

    from introspect.captum import Occlusion

    with torch.no_grad():
        target = int(model(x).argmax())
    kwargs = dict(sliding_window_shapes=(3, window, window), strides=(3, stride, stride), target=target, baselines=0)
    ours, theirs = Occlusion(model), CaptumOcclusion(model)
    wall: dict = {p: [] for p in ["ours", *ppes]}
    cpu: dict = {p: [] for p in ["ours", *ppes]}
    for r in range(rounds):
        line = []
        for p in ["ours", *ppes]:
            if p == "ours":
                t, attr_ours = timed(lambda: ours.attribute(x, **kwargs))
                line.append(f"introspect {t:.2f} s (CPU {last_cpu:.2f} s, {ours.last_path})")
            else:
                t, attr_theirs = timed(lambda p=p: theirs.attribute(x, perturbations_per_eval=p, **kwargs))
                line.append(f"captum ppe {p} {t:.2f} s (CPU {last_cpu:.2f} s)")
            wall[p].append(t)
            cpu[p].append(last_cpu)
        print(f"  round {r + 1}: " + ", ".join(line), flush=True)
    med = {p: (statistics.median(wall[p]), statistics.median(cpu[p])) for p in wall}
    stats = {k: v for k, v in ours.last_stats.items() if k in ("work_fraction", "path", "chosen",
                                                                "incremental_s_per_position", "full_s_per_position",
                                                                "gather_overhead_s_per_position")}
    print(f"{name}: introspect median {med['ours'][0]:.2f} s (CPU {med['ours'][1]:.2f} s); max relative difference "
          f"{rel_error(attr_ours, attr_theirs):.1e}; cost model {stats}", flush=True)
    ratios = {}
    for p in ppes:
        ratios[p] = (med[p][0] / med["ours"][0], med[p][1] / med["ours"][1])
        print(f"  captum ppe {p}: median {med[p][0]:.2f} s (CPU {med[p][1]:.2f} s): ratio {ratios[p][0]:.2f}x "
              f"(CPU time {ratios[p][1]:.2f}x)", flush=True)
    return ratios


def neuron_case(rounds: int, captum_calls: int, images_count: int) -> float:
    import numpy as np
    from bench_deconv import photos
    from captum.attr import NeuronDeconvolution as CaptumNeuronDeconvolution

    from introspect.captum import NeuronDeconvolution
    from introspect.models import zfnet

    torch.manual_seed(0)
    model = zfnet(lrn=False).eval()
    images = photos(images_count)
    layer = model.features[12]
    with torch.no_grad():  # the top-9 of every conv5 map: the strongest unit of each map per image
        acts = torch.cat([model.features[:13](images[i:i + 8]) for i in range(0, len(images), 8)])
    n, c, h, w = acts.shape
    peak, where = acts.flatten(2).max(2)  # N x C
    top = peak.topk(9, dim=0).indices  # 9 x C: images
    neurons = sorted((int(top[r, ch]), ch, *divmod(int(where[top[r, ch], ch]), w))
                     for ch in range(c) for r in range(9))
    print(f"ZFNet conv5 (no LRN): {len(neurons)} neurons (top-9 of {c} maps over {images_count} images, "
          f"{len({i for i, *_ in neurons})} distinct images)", flush=True)
    sample = [neurons[int(i)] for i in np.linspace(0, len(neurons) - 1, captum_calls).round()]
    ours, theirs = NeuronDeconvolution(model, layer), CaptumNeuronDeconvolution(model, layer)
    per_round = max(1, len(sample) // rounds)
    t_ours, t_theirs, cpu_ours, cpu_theirs, errors = [], [], [], [], []
    for r in range(rounds):
        def run_ours():
            out = {}
            for i, ch, y, x in neurons:
                out[(i, ch, y, x)] = ours.attribute(images[i:i + 1], neuron_selector=(ch, y, x))
            return out
        a, results = timed(run_ours)
        cpu_ours.append(last_cpu)
        part = sample[r * per_round:(r + 1) * per_round]
        start, cpu = time.perf_counter(), time.process_time()
        for key in part:
            i, ch, y, x = key
            theirs_attr = theirs.attribute(images[i:i + 1], neuron_selector=(ch, y, x))
            errors.append(rel_error(results[key], theirs_attr))
        b = (time.perf_counter() - start) / len(part) * len(neurons)
        cpu_theirs.append((time.process_time() - cpu) / len(part) * len(neurons))
        t_ours.append(a)
        t_theirs.append(b)
        print(f"  round {r + 1}: introspect {a:.1f} s for {len(neurons)} ({ours.last_path}), captum "
              f"{b:.1f} s (scaled from {len(part)} calls), ratio {b / a:.2f}x; CPU {cpu_ours[-1]:.1f} s vs "
              f"{cpu_theirs[-1]:.1f} s, ratio {cpu_theirs[-1] / cpu_ours[-1]:.2f}x", flush=True)
    ratio = statistics.median(t_theirs) / statistics.median(t_ours)
    cpu_ratio = statistics.median(cpu_theirs) / statistics.median(cpu_ours)
    print(f"NeuronDeconvolution x {len(neurons)}: introspect median {statistics.median(t_ours):.1f} s "
          f"({statistics.median(t_ours) / len(neurons) * 1e3:.1f} ms/call), captum median "
          f"{statistics.median(t_theirs):.1f} s ({statistics.median(t_theirs) / len(neurons) * 1e3:.1f} ms/call): "
          f"ratio {ratio:.2f}x; CPU time ratio {cpu_ratio:.2f}x; max relative difference {max(errors):.1e}",
          flush=True)
    return ratio, cpu_ratio


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ppe", default="1,16",
                        help="captum's perturbations_per_eval, comma-separated (1: captum's default call)")
    parser.add_argument("--captum-calls", type=int, default=60, help="captum NeuronDeconvolution calls timed")
    parser.add_argument("--images", type=int, default=48, help="photographs mined for the top-9")
    parser.add_argument("--cases", default="resnet18,zfnet,densenet121,neuron")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import torchvision

    from introspect.models import zfnet

    print(machine(), flush=True)
    cases = args.cases.split(",")
    ppes = [int(p) for p in args.ppe.split(",")]
    ratios = {}
    torch.manual_seed(1)
    if "resnet18" in cases:
        torch.manual_seed(0)
        model = torchvision.models.resnet18().eval()
        ratios["ResNet18 224, window 32 stride 16"] = occlusion_case(
            "Occlusion ResNet18 224x224 w32 s16", model, torch.randn(1, 3, 224, 224), 32, 16, args.rounds, ppes)
    if "zfnet" in cases:
        torch.manual_seed(0)
        model = zfnet(num_classes=1000).eval()
        ratios["ZFNet 224, window 50 stride 10 (Fig. 7)"] = occlusion_case(
            "Occlusion ZFNet 224x224 w50 s10", model, torch.randn(1, 3, 224, 224), 50, 10, args.rounds, ppes)
    if "densenet121" in cases:
        torch.manual_seed(0)
        model = torchvision.models.densenet121().eval()
        ratios["DenseNet121 160, window 32 stride 16"] = occlusion_case(
            "Occlusion DenseNet121 160x160 w32 s16", model, torch.randn(1, 3, 160, 160), 32, 16, args.rounds, ppes)
    if "neuron" in cases:
        ratios["NeuronDeconvolution, 2,304 ZFNet conv5 neurons"] = neuron_case(args.rounds, args.captum_calls,
                                                                               args.images)
    print(machine())
    for name, found in ratios.items():
        if isinstance(found, dict):  # occlusion: one ratio per captum ppe
            print(f"{name}: " + "; ".join(f"vs captum ppe {p}: {w:.2f}x (CPU time {c:.2f}x)"
                                          for p, (w, c) in found.items()))
        else:
            print(f"{name}: {found[0]:.2f}x (CPU time {found[1]:.2f}x)")


if __name__ == "__main__":
    main()
