"""Reproduce the bundled model: a ZFNet-shaped network trained on Fashion-MNIST with `introspect train`.

    python examples/train_fashion_mnist.py                      # train, then evaluate on the test set
    python examples/train_fashion_mnist.py --install            # ... and replace the bundled files

The network is the paper's layer sequence (conv1-relu-pool-norm, conv2-relu-pool-norm, conv3, conv4,
conv5, pool5, fc6, fc7, output) scaled to 28x28 images: the grey images are resized to 32x32 and
replicated to three channels (equal mean and std per channel, grey first-layer filters), so the model
also takes ordinary photographs; conv1 keeps the paper's 7x7 filters (stride 1, padding 3 at this
size), conv2 runs at stride 1 (padding 2) so that conv3-conv5 see 8x8 maps; 16, 32, 64, 64, 64
filters; fc6 and fc7 of 256 units. The recipe is the paper's (SGD, momentum 0.9, batches of 128,
learning rate 1e-2 lowered by hand to 1e-3 after epoch 12, dropout 0.5, filter RMS renormalization to 0.1,
random crops and flips), except that the initial weights are drawn with a standard deviation of 0.05
instead of 0.01: with so few filters per layer, 0.01 shrinks the signal about a million-fold on its
way through the eight layers and SGD does not move in the first epochs.

``--install`` copies the last checkpoint to ``introspect/data/zfnet_fashion_mnist.pt`` and writes
``introspect/data/images/``: for each class, the first test image the model classifies correctly,
as a 28x28 PNG named ``<test index>_<class>.png``, and ``labels.json`` (file -> class name).

The test accuracy printed at the end is measured the way every introspect command sees images: each
test image written as a PNG-equivalent 8-bit picture and preprocessed by ``introspect.images``.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DATA = Path("/usr/share/datasets/fashion-mnist")
EPOCHS = 13
TRAIN_ARGS = [
    "--arch", "zfnet", "--input-size", "32", "--widths", "16,32,64,64,64", "--fc", "256",
    "--arch-arg", "conv1_stride=1", "--arch-arg", "conv1_padding=3", "--arch-arg", "conv2_stride=1",
    "--arch-arg", "conv2_padding=2", "--init-std", "0.05", "--epochs", str(EPOCHS), "--lr-steps", "12,17",
    "--seed", "0",
]


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@torch.no_grad()
def evaluate_like_the_commands(checkpoint: Path, data: Path, cache: Path):
    """Accuracy on the 10,000 test images, preprocessed by introspect.images from 8-bit PIL images."""
    from introspect.images import Preprocess
    from introspect.models import load_model, meta_of
    from introspect.training import fashion_mnist

    model = load_model(checkpoint)
    meta = meta_of(model)
    pre = Preprocess.from_meta(meta)
    _, test = fashion_mnist(data, cache)
    predictions = []
    for start in range(0, len(test), 500):
        batch = torch.stack([pre(Image.fromarray(img[0].numpy(), "L")) for img in test.images[start:start + 500]])
        predictions.append(model(batch).argmax(1))
    predicted = torch.cat(predictions)
    return float((predicted == test.targets).float().mean()), predicted, test, meta


def install(checkpoint: Path, predicted: torch.Tensor, test, meta) -> None:
    data_dir = ROOT / "introspect" / "data"
    images = data_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    for old in images.glob("*.png"):
        old.unlink()
    shutil.copyfile(checkpoint, data_dir / "zfnet_fashion_mnist.pt")
    labels = {}
    for label, name in enumerate(meta.classes):
        correct = ((test.targets == label) & (predicted == label)).nonzero().flatten()
        index = int(correct[0])
        file = f"{index}_{slug(name)}.png"
        Image.fromarray(test.images[index, 0].numpy(), "L").save(images / file)
        labels[file] = name
    (images / "labels.json").write_text(json.dumps(dict(sorted(labels.items())), indent=2) + "\n")
    print(f"installed {data_dir / 'zfnet_fashion_mnist.pt'} and {len(labels)} test images in {images}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder of the Fashion-MNIST IDX files")
    parser.add_argument("--out", type=Path, default=Path("runs/zfnet-fashion-mnist"), help="training output folder")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--install", action="store_true", help="replace the bundled checkpoint and test images")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="skip training: evaluate (and --install) this checkpoint")
    args = parser.parse_args()

    torch.set_num_threads(min(2, torch.get_num_threads()))
    checkpoint = args.checkpoint
    if checkpoint is None:
        began = time.perf_counter()
        command = [sys.executable, "-m", "introspect.cli", "train", str(args.data), *TRAIN_ARGS,
                   "--out", str(args.out), "--device", args.device]
        print("$ introspect train " + " ".join(command[4:]), flush=True)
        subprocess.run(command, check=True)
        print(f"training took {time.perf_counter() - began:.0f}s")
        checkpoint = args.out / f"epoch_{EPOCHS:03d}.pt"
    accuracy, predicted, test, meta = evaluate_like_the_commands(checkpoint, args.data, args.out / "data")
    print(f"test accuracy (10,000 images, preprocessed as the commands do): {accuracy:.4f}")
    if args.install:
        install(checkpoint, predicted, test, meta)


if __name__ == "__main__":
    main()
