"""Benchmark: throughput of top-k mining against a plain forward pass over the same images.

Claim: the streaming pass of ``top_k`` (``introspect_deconv.top.mine``: forward truncated at the layer,
then the per-map running top-k) runs at least 0.9x as fast as a plain ``torch.no_grad()`` forward over
the same images truncated at the same layer (``Recorder.forward(stop=True)``).

Both loops read the same batches (slices of one in-memory tensor, so data loading is identical and
shared), and run alternately, several rounds; the medians are compared. With ``--folder DIR`` both
read a folder through the same ``ImageFolderDataset`` and ``DataLoader`` instead.

Both the medians and the fastest rounds are compared: on a shared machine the spread between rounds
can exceed the difference being measured.

Run:  python benchmarks/bench_top.py [--images 64] [--batch-size 32] [--layer conv5] [--rounds 7]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--layer", default="conv5")
    parser.add_argument("--k", type=int, default=9)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--folder", default=None, help="read images from this folder instead of memory")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from bench_deconv import photos
    from bench_mining import side_by_side

    from introspect.models import zfnet

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = zfnet().eval().to(device)  # the paper's network, LRN included
    if args.folder:
        from introspect.images import ImageFolderDataset, Preprocess

        data = ImageFolderDataset(args.folder, Preprocess((3, 224, 224)))
    else:
        data = photos(args.images)
    n = len(data)
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}")
    print(f"ZFNet (with LRN) up to {args.layer}, {n} images 224x224 "
          f"({'folder ' + args.folder if args.folder else 'in memory'}), batch {args.batch_size}, k {args.k}")

    times = side_by_side(model, data, device, args.batch_size, args.layer, args.k, args.rounds, args.workers)
    t_plain, t_mine = times["plain"], times["mine"]
    p, m = statistics.median(t_plain), statistics.median(t_mine)
    print(f"plain no_grad forward : median {p:7.2f} s  ({n / p:6.1f} images/s)  "
          f"rounds {[round(t, 2) for t in t_plain]}")
    print(f"top-k mining          : median {m:7.2f} s  ({n / m:6.1f} images/s)  "
          f"rounds {[round(t, 2) for t in t_mine]}")
    print(f"throughput ratio mining / plain forward: {p / m:.3f} (medians), {min(t_plain) / min(t_mine):.3f} "
          f"(fastest rounds)  (target >= 0.9)")


if __name__ == "__main__":
    main()
