"""Benchmark: images per second of top-k mining against a plain forward pass, per device, and
mining on several Gloo processes against one.

Claim: the streaming pass of ``top_k`` (``introspect_deconv.top.mine``: the forward pass truncated at
the layer, then the per-map running top-k) keeps at least 0.9x the throughput of a plain
``torch.no_grad()`` forward over the same images truncated at the same layer, on the CPU and (when
one is present) on the GPU. Both loops read the same in-memory batches and move each to the device;
they alternate for ``--rounds`` rounds after a warm-up, and medians and fastest rounds are compared.

With ``--processes P`` (default 2) it also runs ``top_k(project=False)`` -- mining and the exact
merge -- on ``P`` Gloo processes under ``torchrun`` (each with ``--threads / P`` threads) against one
process with ``--threads`` threads, timed inside the processes (after start-up), and checks that
both give the same ranking.

Run:  python benchmarks/bench_mining.py [--images 64] [--gpu-images 2048] [--batch-size 32]
          [--gpu-batch-size 128] [--rounds 5] [--threads 2] [--processes 2] [--devices cpu,cuda]
"""
from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def machine(device: torch.device) -> str:
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (f"{platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}{gpu}")


def network(device) -> torch.nn.Module:
    from introspect.models import zfnet

    torch.manual_seed(0)
    return zfnet().eval().to(device)  # the paper's network, LRN included, random weights


def side_by_side(model, data, device: torch.device, batch_size: int, layer: str, k: int, rounds: int,
                 workers: int = 0) -> dict:
    """Seconds of each round of the plain truncated forward (``"plain"``) and of ``mine``
    (``"mine"``) over ``data`` (a tensor or a data set), alternating, after one warm-up each."""
    from introspect.core import attach
    from introspect_deconv.top import _batches, mine

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def plain() -> float:
        sync()
        start = time.perf_counter()
        with torch.no_grad(), attach(model, [layer]) as rec:
            for x in _batches(data, batch_size, workers, None):
                rec.forward(x.to(device), stop=True)
        sync()
        return time.perf_counter() - start

    def mining() -> float:
        sync()
        start = time.perf_counter()
        mine(model, data, layer, k, batch_size=batch_size, workers=workers)
        sync()
        return time.perf_counter() - start

    plain(), mining()  # warm-up (cuDNN algorithm choice, allocator)
    times = {"plain": [], "mine": []}
    for _ in range(rounds):
        times["plain"].append(plain())
        times["mine"].append(mining())
    return times


def report(label: str, n: int, times: dict) -> None:
    for name, title in (("plain", "plain no_grad forward"), ("mine", "top-k mining (mine)")):
        t = times[name]
        med = statistics.median(t)
        print(f"  {title:<24}: median {med:7.3f} s  ({n / med:8.1f} images/s)  rounds {[round(v, 3) for v in t]}")
    p, m = times["plain"], times["mine"]
    print(f"  {label}: throughput ratio mining / plain forward {statistics.median(p) / statistics.median(m):.3f} "
          f"(medians), {min(p) / min(m):.3f} (fastest rounds)  (target >= 0.9)")


# --------------------------------------------------------------------------------------------------
# several processes
# --------------------------------------------------------------------------------------------------
def worker(args) -> None:
    """One rank under torchrun: time ``top_k(project=False)`` on the process group; rank 0 writes
    the times and the ranking to ``args.result``."""
    import torch.distributed as dist
    from bench_deconv import photos

    from introspect.plugin import process_group
    from introspect_deconv.top import top_k

    torch.set_num_threads(args.threads)
    with process_group("cpu") as group:
        model, data = network("cpu"), photos(args.images)
        top_k(model, data, layer=args.layer, k=args.k, batch_size=args.batch_size, project=False,
              limit=args.batch_size * 2)
        times = []
        for _ in range(args.rounds):
            dist.barrier()
            start = time.perf_counter()
            top = top_k(model, data, layer=args.layer, k=args.k, batch_size=args.batch_size, project=False)
            times.append(time.perf_counter() - start)
        if group.rank == 0:
            torch.save({"times": times, "image_index": top.image_index, "activation": top.activation,
                        "world": group.world}, args.result)


def processes(args) -> None:
    from bench_deconv import photos

    from introspect_deconv.top import top_k

    per_process = max(1, args.threads // args.processes)
    print(f"\n{args.processes} Gloo processes ({per_process} thread(s) each) against 1 process "
          f"({args.threads} threads): top_k(project=False), {args.images} images, batch {args.batch_size}")
    model, data = network("cpu"), photos(args.images)
    top_k(model, data, layer=args.layer, k=args.k, batch_size=args.batch_size, project=False, limit=args.batch_size * 2)
    one, ref = [], None
    for _ in range(args.rounds):
        start = time.perf_counter()
        ref = top_k(model, data, layer=args.layer, k=args.k, batch_size=args.batch_size, project=False)
        one.append(time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp, socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        result = os.path.join(tmp, "result.pt")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(args.processes),
               "--master-port", str(port), os.path.abspath(__file__), "--worker", "--result", result,
               "--images", str(args.images), "--batch-size", str(args.batch_size), "--layer", args.layer,
               "--k", str(args.k), "--rounds", str(args.rounds), "--threads", str(per_process)]
        env = os.environ | {"OMP_NUM_THREADS": str(per_process)}
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        got = torch.load(result)
    many = got["times"]
    same = torch.equal(got["image_index"], ref.image_index) and torch.equal(got["activation"], ref.activation)
    m1, mp = statistics.median(one), statistics.median(many)
    print(
        f"  1 process     : median {m1:7.3f} s  ({args.images / m1:6.1f} images/s)  rounds {[round(t, 3) for t in one]}"
    )
    print(f"  {args.processes} processes   : median {mp:7.3f} s  ({args.images / mp:6.1f} images/s)  "
          f"rounds {[round(t, 3) for t in many]}")
    print(f"  speed-up {args.processes} processes / 1 process: {m1 / mp:.3f} (medians), {min(one) / min(many):.3f} "
          f"(fastest rounds); same ranking as one process: {same}")


def main() -> None:
    from bench_deconv import photos

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64, help="images on the CPU")
    parser.add_argument("--gpu-images", type=int, default=2048, help="images on the GPU")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--gpu-batch-size", type=int, default=128)
    parser.add_argument("--layer", default="conv5")
    parser.add_argument("--k", type=int, default=9)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2, help="Gloo processes to compare with one (0: skip)")
    parser.add_argument("--devices", default=None, help="comma-separated; default cpu, and cuda when available")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    torch.set_num_threads(args.threads)
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"ZFNet (with LRN, random weights) up to {args.layer}, 224x224 images in memory, k {args.k}")
    for name in devices:
        device = torch.device(name)
        n, batch = (args.gpu_images, args.gpu_batch_size) if device.type == "cuda" else (args.images, args.batch_size)
        print(f"\n{machine(device)}\n  {n} images, batch {batch}, {args.rounds} rounds")
        report(name, n, side_by_side(network(device), photos(n), device, batch, args.layer, args.k, args.rounds))
    if not torch.cuda.is_available():
        print("\nno CUDA device here: no GPU figures")
    if args.processes > 1:
        processes(args)


if __name__ == "__main__":
    main()
