"""Invariance of the bundled model (the paper's Sec. 4.4, Fig. 5), for all three transformations.

The paper translated (vertically), scaled and rotated 5 images and plotted, against the amount of
transformation, the Euclidean distance between the feature vectors of the original and the
transformed image at layers 1 and 7, and the probability of the true class. Here the model is the
bundled ZFNet-shaped network trained on Fashion-MNIST (32 x 32 input) and the images are the first 5
bundled test images (ankle boot, dress, bag, T-shirt/top, pullover) with their true classes. The
paper's ranges are scaled to the 32-pixel input: translation -9..9 pixels (-60..60 at 224), scale
1..1.8, rotation 0..360 degrees.

Uncovered pixels are filled with black (``--fill zero``, the default here), the background of
Fashion-MNIST; the library's default, the normalization mean, paints a grey band that this data set
never has (``--fill mean`` to see it).

Run::

    python examples/invariance_bundled.py [--out examples/figures] [--results DIR] [--fill zero]

It writes ``invariance_translate.png``, ``invariance_scale.png`` and ``invariance_rotate.png``
(the Fig. 5 row of each transformation) into ``--out`` and, with ``--results``, every file of
``introspect invariance`` per transformation. It prints, per transformation, the mean over the images
of the distance divided by the norm of the original's feature vector (the layers have different sizes,
so raw distances do not compare) at the smallest transformation and at the one farthest from the
identity, the range of
p(true class) and how often the label stays the true class. Needs no data set; a few seconds on a CPU.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import introspect
from introspect.cli import bundled_image_dir
from introspect.images import Preprocess, load_images
from introspect.render import save_png
from introspect_invariance.figure import pictures

HERE = Path(__file__).resolve().parent


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "figures", help="folder for the three figures")
    parser.add_argument("--results", type=Path, default=None, help="also save every output file here")
    parser.add_argument("--fill", default="zero", help="uncovered pixels: zero (black), mean, gray or blur")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = introspect.load_model(None)
    paths = sorted(bundled_image_dir().glob("*.png"))[:5]
    labels = json.loads((bundled_image_dir() / "labels.json").read_text(encoding="utf-8"))
    x = load_images(paths, Preprocess.from_meta(model.introspect_meta))
    numbers = {}
    for transform in ("translate", "scale", "rotate"):
        result = introspect.invariance(model, x, transform=transform, targets=[labels[p.name] for p in paths],
                                       fill=args.fill, names=[p.stem for p in paths])
        save_png(args.out / f"invariance_{transform}.png", pictures(result)["figure.png"])
        if args.results is not None:
            result.save(args.results / transform)
        summary = result.to_dict()
        kept = [i["label_kept"] for i in summary["images"]]
        numbers[transform] = {
            "nearest": summary["nearest_value"], "farthest": summary["farthest_value"],
            "relative_distance_nearest": {layer["alias"]: round(layer["mean_relative_distance_at_nearest"], 3)
                                          for layer in summary["layers"]},
            "relative_distance": {layer["alias"]: round(layer["mean_relative_distance_at_farthest"], 3)
                                  for layer in summary["layers"]},
            "p_true_min": round(float(result.prob.min()), 3), "p_true_max": round(float(result.prob.max()), 3),
            "p_true_at_farthest": [round(float(p), 3) for p in result.prob[:, result.farthest]],
            "label_kept_mean": round(sum(kept) / len(kept), 3),
        }
        n = numbers[transform]
        print(f"{transform:<9} distance / norm at {n['nearest']:g} {result.unit}: "
              + ", ".join(f"{k} {v:.3f}" for k, v in n["relative_distance_nearest"].items())
              + f"; at {n['farthest']:g}: "
              + ", ".join(f"{k} {v:.3f}" for k, v in n["relative_distance"].items())
              + f"; p(true class) {n['p_true_min']:.3f} .. {n['p_true_max']:.3f}, at {n['farthest']:g}: "
              + " ".join(f"{p:.2f}" for p in n["p_true_at_farthest"])
              + f"; true label kept at {n['label_kept_mean']:.0%} of the values")
    print(f"wrote {', '.join(f'invariance_{t}.png' for t in numbers)} to {args.out}")
    return numbers


if __name__ == "__main__":
    main()
