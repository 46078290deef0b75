"""Feature generalization (the paper's Table 7) of the bundled model on handwritten digits.

The bundled ZFNet-shaped model was trained on Fashion-MNIST (clothes) and has never seen a digit.
This script writes scikit-learn's 1797 8x8 handwritten digits (``sklearn.datasets.load_digits``) as a
folder of PNG images, one subfolder per digit (ink bright on black, as in Fashion-MNIST; the model's
preprocessing resizes them to its 32x32 input), keeps the model fixed and trains a softmax and a
linear SVM on the features of each layer 1..7 with 5, 10 and 30 training images per digit, tested on
the other images, over several random training sets. Two baselines in the same run, with the same
training images: the classifiers on the model's input pixels (``pixels``, 3x32x32) and on the
original 8x8 pixels.

Run::

    python examples/generalization_digits.py                  # writes introspect-out/generalization_digits/
    python examples/generalization_digits.py --repeats 1      # quicker

It prints the table and writes ``examples/figures/generalization_digits.png`` (plot and table).
The same analysis from the command line, on the folder this script writes::

    introspect generalization introspect-out/generalization_digits/digits --per-class 5 --per-class 10 \\
        --per-class 30 --pixels --repeats 3
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import introspect
from introspect.images import ImageFolderDataset, Preprocess
from introspect.models import meta_of
from introspect.render import save_png
from introspect_generalization.figure import accuracy_plot, figure, table_picture, text_table

HERE = Path(__file__).resolve().parent


def write_digits(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Write the digits as ``root/<digit>/<index>.png``; return the 8x8 pixels and labels in the
    order the image folder lists them (by digit, then index)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.lexsort((np.arange(len(digits.target)), digits.target))
    for i in order:
        folder = root / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.round(digits.images[i] * (255 / 16)).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"{i:04d}.png")
    images = torch.tensor(digits.images[order], dtype=torch.float32).unsqueeze(1) / 16
    return images, torch.tensor(digits.target[order])


def progress(stage: str, done: int, total: int) -> None:
    """A one-line counter on stderr."""
    print(f"\r{stage}: {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("introspect-out/generalization_digits"))
    parser.add_argument("--per-class", type=int, nargs="+", default=[5, 10, 30])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", type=Path, default=HERE / "figures" / "generalization_digits.png")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    raw, labels = write_digits(args.out / "digits")
    model = introspect.load_model(None)
    data = ImageFolderDataset(args.out / "digits", Preprocess.from_meta(meta_of(model)))
    if data.targets != labels.tolist():  # the folder must list the images in the order of `raw`
        raise RuntimeError(f"{args.out / 'digits'} holds other images; remove it or pick another --out")
    common = dict(per_class=args.per_class, classifiers=("softmax", "svm"), repeats=args.repeats, seed=args.seed,
                  progress=progress)

    result = introspect.feature_generalization(model, data, pixels=True, **common)
    # the same classifiers and training images on the original 8x8 pixels
    flat = torch.nn.Sequential(torch.nn.Flatten())
    raw8 = introspect.feature_generalization(flat, (raw, labels), layers=["0"], **common)

    print(text_table(result))
    print("\n8x8 pixels (64 values), same training images:")
    for c, kind in enumerate(raw8.classifiers):
        for p, n in enumerate(raw8.per_class):
            print(f"  {kind} {n}/class: {100 * float(raw8.accuracy[0, c, p]):.1f} "
                  f"± {100 * float(raw8.accuracy_std[0, c, p]):.1f}")
    print(
        f"feature sizes: {dict(zip([result.layer_title(i) for i in range(len(result.layers))], result.feature_dims))}"
    )
    print(f"features {result.stats['features_seconds']} s, classifiers {result.stats['fit_seconds']} s")

    files = result.save(args.out / "result")
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    save_png(args.figure, figure(accuracy_plot(result), table_picture(result)))
    print(f"wrote {len(files)} files to {args.out / 'result'} and {args.figure}")


if __name__ == "__main__":
    main()
