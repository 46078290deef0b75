"""Correspondence analysis on real faces (the paper's Sec. 4.3, Table 1), end to end.

The paper masked the right eye, the left eye and the nose in 5 frontal photographs of dogs and found
that the sign patterns of the feature changes agreed better across images than for random masks of
the same size (Table 1: layer 5, 0.067-0.079 for the parts vs 0.107 random; layer 7, 0.068-0.069 vs
0.073). Here the photographs are faces from Labeled Faces in the Wild, as shipped with scikit-image
(``skimage.data.lfw_subset()``: 200 aligned 25 x 25 grey crops, the first 100 faces, then 100
non-faces), and the network is a small ZFNet (the paper's layer layout and names, narrower, conv1
stride 1, 64 x 64 input) trained here on face / non-face.

Where the parts are: in the mean of the 100 aligned faces the eyes are the two dark bands at rows
6-9, columns 3-7 (the eye on the image's left, i.e. the person's right eye) and 13-17 (the person's
left eye); the nose is the bright ridge and dark nostrils at rows 9-14, columns 8-12. As boxes
``[y0, x0, y1, x1]`` (end-exclusive) in the 25 x 25 image pixels: right_eye [6, 3, 10, 8],
left_eye [6, 13, 10, 18], nose [9, 8, 15, 13]. They are written to ``parts.json`` and mapped through
the model's preprocessing (25 -> 64 pixels) by ``introspect.correspondence``, as the CLI does.

The network never sees the held-out faces (the last 20 faces and 20 non-faces) in training; the
analysis uses 5 of them (the paper's number) and then all 20.

Run::

    python examples/correspondence_faces.py [--out DIR] [--epochs 20] [--random 20] [--seeds 0 1 2]

What it gives (torch 2.x on a 2-core CPU, 2 threads, 20 epochs with Adam, 20 random trials per part;
about 15 s per seed on an idle machine, 90 s when the cores are busy with other work): held-out accuracy 0.95
(38 of 40) for seeds 0, 1 and 2. Mean feature sign change, mean ± std over image pairs, seed 0:

==================  ================  ================
5 held-out faces    relu5 (D=1152)    relu7 (D=64)
==================  ================  ================
right_eye           0.162 ± 0.063     0.291 ± 0.220
left_eye            0.168 ± 0.103     0.300 ± 0.245
nose                0.166 ± 0.076     0.300 ± 0.207
random              0.147 ± 0.061     0.211 ± 0.228
==================  ================  ================

==================  ================  ================
20 held-out faces   relu5 (D=1152)    relu7 (D=64)
==================  ================  ================
right_eye           0.105 ± 0.073     0.164 ± 0.223
left_eye            0.116 ± 0.077     0.164 ± 0.229
nose                0.142 ± 0.083     0.255 ± 0.225
random              0.154 ± 0.063     0.248 ± 0.228
==================  ================  ================

Across seeds 0, 1, 2 with all 20 held-out faces, every part is below the random control at the
convolutional layer relu5 (seed 1: 0.128 / 0.127 / 0.138 vs 0.161; seed 2: 0.156 / 0.182 / 0.221 vs
0.263), and none of the 20 random trials of any part's size has a lower mean than the part itself.
At relu7 the eyes are below random for every seed, the nose for seeds 1 and 2. With only 5 faces (the
paper's number) the differences are within the spread over the 10 pairs and go either way: seed 0
has no part below random, seed 1 the nose, seed 2 the right eye. So the paper's finding holds here at
layer 5 when enough images are compared, and 5 images are too few to see it in this network.

The large spread at relu7 has a plain cause: in this two-class network fc7 is nearly one-dimensional.
The same 32 of its 64 units are active for every face and move together with the face score, so
masking moves them all up or all down and a pair's distance is close to 0 (same direction) or 0.5
(opposite directions); ``pairs.png`` shows this block pattern. The numbers can move a little with the
torch version and thread count; the script prints the ones it gets.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import introspect
from introspect.images import Preprocess
from introspect_correspondence import pair_stats

#: The parts, in the 25 x 25 pixels of the aligned crops (see the module docstring).
PARTS = {"right_eye": [6, 3, 10, 8], "left_eye": [6, 13, 10, 18], "nose": [9, 8, 15, 13]}
#: A ZFNet with the paper's layers and names, narrow enough for a CPU: conv5 is 6 x 6 at 64 x 64.
ARCH_KWARGS = {"num_classes": 2, "in_channels": 1, "widths": [16, 32, 48, 48, 32], "fc": 64,
               "conv1_stride": 1, "pool5_size": 3}
INPUT_SIZE = (1, 64, 64)
CLASSES = ["non-face", "face"]
HELD_OUT = list(range(80, 100)) + list(range(180, 200))  # 20 faces, 20 non-faces


def load_crops() -> tuple[list[Image.Image], torch.Tensor]:
    """The 200 crops as 8-bit grey PIL images (exactly what a PNG of them holds) and labels (1 = face)."""
    import skimage.data

    data = skimage.data.lfw_subset()
    crops = [Image.fromarray(np.round(a * 255).astype(np.uint8), mode="L") for a in data]
    labels = torch.tensor([1] * 100 + [0] * 100)
    return crops, labels


def train(crops, labels, epochs: int = 20, seed: int = 0):
    """Train the small ZFNet on face / non-face; return ``(model, preprocess, held-out accuracy)``."""
    torch.manual_seed(seed)
    train_idx = [i for i in range(len(crops)) if i not in HELD_OUT]
    raw = Preprocess(INPUT_SIZE, (0.0,), (1.0,))  # resize 25 -> 64, pixels in [0, 1]
    pixels = torch.stack([raw(c) for c in crops])
    mean, std = pixels[train_idx].mean().item(), pixels[train_idx].std().item()
    pre = Preprocess(INPUT_SIZE, (mean,), (std,))
    x = (pixels - mean) / std
    model = introspect.zfnet(**ARCH_KWARGS)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    xt, yt = x[train_idx], labels[train_idx]
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        for start in range(0, len(xt), 32):
            idx = order[start:start + 32]
            batch = xt[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5  # faces are symmetric enough to mirror
            batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
            loss = F.cross_entropy(model(batch), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x[HELD_OUT]).argmax(1) == labels[HELD_OUT]).float().mean().item()
    return model, pre, accuracy


def summarize(result) -> dict:
    """The table as ``{row: {layer: [mean, std]}}``, the parts whose mean is below the random row's
    (``below_random``), and per part the fraction of its random trials (masks of its size) whose mean
    over pairs is lower than the part's (``random_trials_below``: small = the part is unusual)."""
    trials_below = {}
    for part in result.parts:
        trials_below[part] = {}
        for layer in result.layers:
            per_trial = torch.stack([pair_stats(m)[0] * torch.ones(()) for m in result.random_pairs[part][layer]])
            trials_below[part][layer] = (per_trial < result.mean[part][layer]).double().mean().item()
    return {
        "images": len(result.image_names),
        "table": {r: {l: list(result.cell(r, l)) for l in result.layers} for r in result.rows},
        "below_random": {l: [p for p in result.parts if result.mean[p][l] < result.mean["random"][l]]
                         for l in result.layers},
        "random_trials_below": trials_below,
    }


def run(out: str | Path, epochs: int = 20, random_trials: int = 20, n_small: int = 5, n_all: int = 20,
        seed: int = 0, verbose: bool = True) -> dict:
    """Train, write the checkpoint, the held-out face PNGs and ``parts.json`` under ``out``, and run
    the correspondence analysis on the first ``n_small`` and the first ``n_all`` (default: all 20)
    held-out faces.

    Returns:
        dict: ``accuracy``, and per analysis (``"small"``, ``"all"``) the table
        ``{row: {layer: [mean, std]}}`` and ``below_random`` ``{layer: [parts below random]}``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    crops, labels = load_crops()
    model, pre, accuracy = train(crops, labels, epochs, seed)
    checkpoint = introspect.save_checkpoint(
        out / "faces_zfnet.pt", model, arch="zfnet", arch_kwargs=ARCH_KWARGS, classes=CLASSES,
        input_size=INPUT_SIZE, mean=pre.mean, std=pre.std)
    faces = [i for i in HELD_OUT if labels[i] == 1]
    paths = []
    for i in faces:
        path = out / "faces" / f"lfw_{i:03d}.png"
        path.parent.mkdir(exist_ok=True)
        crops[i].save(path)
        paths.append(path)
    parts_file = out / "parts.json"
    parts_file.write_text(json.dumps(PARTS, indent=2) + "\n")

    net = introspect.load_model(checkpoint, device="cpu")
    summary = {"accuracy": accuracy, "train_seconds": time.perf_counter() - started}
    if verbose:
        print(f"held-out accuracy (face / non-face): {accuracy:.3f}; trained in {summary['train_seconds']:.1f} s")
    for key, chosen in (("small", paths[:n_small]), ("all", paths[:n_all])):
        result = introspect.correspondence(net, chosen, parts=parts_file, layers=["relu5", "relu7"],
                                           random_trials=random_trials, seed=seed)
        result.save(out / f"correspondence_{len(chosen)}_faces")
        summary[key] = summarize(result)
        if verbose:
            print(f"\n{len(chosen)} held-out faces\n{result.table()}")
            for layer in result.layers:
                found = summary[key]["below_random"][layer]
                beaten = ", ".join(f"{p} {summary[key]['random_trials_below'][p][layer]:.2f}" for p in result.parts)
                print(f"  {layer}: parts below random: {', '.join(found) or 'none'}; "
                      f"fraction of random trials more consistent than the part: {beaten}")
    summary["seconds"] = time.perf_counter() - started
    if verbose:
        print(f"\nfiles under {out} ({summary['seconds']:.1f} s); the same analysis from the command line:\n"
              f"  introspect correspondence {checkpoint} {out / 'faces'}/*.png --parts {parts_file} "
              f"--layer relu5 --layer relu7 --random {random_trials} --out {out / 'cli'}")
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
    parser.add_argument("--random", type=int, default=20, help="random-mask trials per part (default 20)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="one training run (and random-mask seed) per value (default 0)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="correspondence_faces_"))
    results = {}
    for seed in args.seeds:
        print(f"\n=== seed {seed} ===")
        results[seed] = run(out / f"seed_{seed}", epochs=args.epochs, random_trials=args.random, seed=seed)
    print("\nsummary: parts below the random control at relu5 (conv) / relu7 (fc)")
    for seed, summary in results.items():
        cells = [f"{summary[k]['images']} faces: {', '.join(summary[k]['below_random']['relu5']) or 'none'} / "
                 f"{', '.join(summary[k]['below_random']['relu7']) or 'none'}" for k in ("small", "all")]
        print(f"  seed {seed} (accuracy {summary['accuracy']:.2f}): " + "; ".join(cells))
    (out / "summary.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"written under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
