"""Feature evolution during training (the paper's Fig. 4) for the bundled network on Fashion-MNIST.

    python examples/evolution_fashion_mnist.py                  # about 10 minutes of CPU time
    python examples/evolution_fashion_mnist.py --epochs 8 --train-images 10000 --device cuda

Needs the Fashion-MNIST IDX files (``--data``, default ``/usr/share/datasets/fashion-mnist``). Steps:

1. Writes a class-balanced subset of the training set (``--train-images``, default 4,000) and the
   first 1,000 test images as IDX files, so ``introspect train`` reads them as Fashion-MNIST: the
   bundled model's recipe (``TRAIN_ARGS`` of ``examples/train_fashion_mnist.py``: the ZFNet layer
   sequence at 32x32, 16-32-64-64-64 filters, SGD with momentum, dropout, filter renormalization,
   random crops and flips), evaluated on those test images after each epoch, one checkpoint per epoch.
2. Writes the first ``--images`` (default 300) test images as PNG files.
3. Runs ``introspect evolution`` on the checkpoints and those images for conv1..conv5 (``--maps``
   feature maps each, the strongest at the last epoch): per layer a block, rows feature maps,
   columns epochs, each tile the deconvnet projection of the map's strongest activation over the
   images at that epoch.
4. Copies the figure (every layer as a block) to ``examples/figures/evolution_fashion_mnist.png`` and
   prints the accuracy of each epoch and how the strongest activations changed.

Everything else lands in ``--out`` (default ``runs/evolution-fashion-mnist``): ``train/epoch_*.pt``
and ``metrics.json``, ``evolution/`` (``evolution_conv1.png`` ... ``evolution_conv5.png``, their
``.npy`` projections, ``evolution.csv``, ``result.json``).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from train_fashion_mnist import DATA, TRAIN_ARGS  # noqa: E402  (the bundled model's recipe)

FIGURE = HERE / "figures" / "evolution_fashion_mnist.png"
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
TEST_IMAGES = 1000


def recipe(epochs: int) -> list[str]:
    """The bundled model's ``introspect train`` arguments, trained for ``epochs`` epochs (its learning-rate
    steps come after epoch 12, so a short run keeps the starting rate)."""
    dropped = {i + 1 for i, arg in enumerate(TRAIN_ARGS) if arg in ("--epochs", "--lr-steps")}
    args = [arg for i, arg in enumerate(TRAIN_ARGS) if i not in dropped and arg not in ("--epochs", "--lr-steps")]
    return args + ["--epochs", str(epochs)]


def write_idx(folder: Path, prefix: str, images: torch.Tensor, labels: torch.Tensor) -> None:
    """``<prefix>-images-idx3-ubyte`` and ``<prefix>-labels-idx1-ubyte`` (big-endian sizes, then bytes)."""
    n, _, h, w = images.shape
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, h, w)
                                                         + images.to(torch.uint8).numpy().tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n)
                                                         + labels.to(torch.uint8).numpy().tobytes())


def subset(data: Path, out: Path, train_images: int):
    """The balanced training subset and the first test images as IDX files in ``out``; returns the test set."""
    from introspect.training import fashion_mnist

    train, test = fashion_mnist(data, out / "cache")
    per_class = train_images // len(train.classes)
    chosen = torch.cat([(train.targets == c).nonzero().flatten()[:per_class] for c in range(len(train.classes))])
    chosen = chosen.sort().values
    out.mkdir(parents=True, exist_ok=True)
    write_idx(out, "train", train.images[chosen], train.targets[chosen])
    write_idx(out, "t10k", test.images[:TEST_IMAGES], test.targets[:TEST_IMAGES])
    return test


def write_pngs(test, folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        name = re.sub(r"[^a-z0-9]+", "_", test.classes[int(test.targets[i])].lower()).strip("_")
        Image.fromarray(test.images[i, 0].numpy(), "L").save(folder / f"{i:04d}_{name}.png")


def run(command: list[str], capture: bool = False) -> subprocess.CompletedProcess:
    print("$ introspect " + " ".join(command[3:]), flush=True)
    return subprocess.run(command, check=True, stdout=subprocess.PIPE if capture else None, text=True)


def report(train_dir: Path, doc: dict) -> None:
    metrics = json.loads((train_dir / "metrics.json").read_text())
    print("epoch  train acc  test acc (1,000 images)")
    for row in metrics["history"]:
        print(f"{row['epoch']:>5}  {row['train_acc']:9.4f}  {row.get('test_acc', float('nan')):8.4f}")
    print("layer  maps  mean strongest activation per epoch  |  maps whose strongest image is the last epoch's")
    for layer in doc["layers"]:
        mean = " ".join(f"{v:7.3f}" for v in layer["mean_activation"])
        same = " ".join(f"{v:4.0%}" for v in layer["same_image_as_last"])
        print(f"{layer['name']:<6} {layer['channels']}  {mean}  |  {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder of the Fashion-MNIST IDX files")
    parser.add_argument("--out", type=Path, default=Path("runs/evolution-fashion-mnist"), help="output folder")
    parser.add_argument("--train-images", type=int, default=4000, help="training images (balanced over classes)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs to train (one checkpoint each)")
    parser.add_argument("--images", type=int, default=300, help="test images the evolution is measured on")
    parser.add_argument("--maps", type=int, default=4, help="feature maps per layer")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = parser.parse_args()

    began = time.perf_counter()
    test = subset(args.data, args.out / "subset", args.train_images)
    write_pngs(test, args.out / "images", args.images)
    introspect = [sys.executable, "-m", "introspect.cli"]
    train_dir = args.out / "train"
    run(introspect + ["train", str(args.out / "subset"), *recipe(args.epochs),
                      "--out", str(train_dir), "--device", args.device])
    layers = [part for name in LAYERS for part in ("--layer", name)]
    done = run(introspect + ["evolution", str(train_dir), "--data", str(args.out / "images"), *layers,
                             "--maps", str(args.maps), "--out", str(args.out / "evolution"), "--device", args.device,
                             "--json"], capture=True)
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.out / "evolution" / "evolution.png", FIGURE)
    report(train_dir, json.loads(done.stdout))
    print(f"wrote {FIGURE} ({time.perf_counter() - began:.0f}s in all)")


if __name__ == "__main__":
    main()
