"""The paper's first-layer comparison (Sec. 4.1, Fig. 6): 11x11 filters at stride 4 against 7x7 at stride 2.

    python examples/filters_aliasing.py                 # the bundled model, then two small nets trained here
    python examples/filters_aliasing.py --bundled-only  # only the bundled model (no Fashion-MNIST needed)

Zeiler & Fergus saw, in the first layer of Krizhevsky's network (11x11 filters, stride 4), dead filters
and aliasing artifacts, and went to 7x7 filters at stride 2. This script first reports the bundled
model's conv1 (7x7, stride 1 at its 32x32 input) over the bundled images. Then, when the Fashion-MNIST
IDX files are at ``/usr/share/datasets/fashion-mnist`` (they are not shipped), it trains two small
ZFNet-shaped nets (conv1, conv2, conv5, fc6, fc7) that differ only in conv1 -- 11x11 stride 4 and 7x7
stride 2 -- for ``--epochs`` epochs on a ``--train`` image subset at 64x64 with
:func:`introspect.training.train_model` (SGD, learning rate 1e-2, momentum 0.9, filter RMS
renormalization, crops and flips), and compares their dead filters (over ``--test`` test images) and
the share of filter energy above the Nyquist frequency of the stride, at initialization and after
training. To learn within two epochs on a CPU the nets leave out the paper's dropout and contrast
normalization, and only conv1 starts from the paper's N(0, 1e-2) (the layers above from He's
initialization). Random (white) filters already put about 1 - 1/s^2 of their energy above the
Nyquist frequency of stride s, so the numbers at initialization are the baseline to read the trained
ones against. About 4 minutes of CPU time (10 minutes on two busy cores).

Writes ``examples/figures/filters_bundled_conv1.png``, ``filters_bundled_spectrum.png``,
``filters_11x11_s4.png``, ``filters_7x7_s2.png`` and ``filters_comparison.png`` (or into ``--figures``),
and prints every number.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import introspect
from introspect.images import ImageFolderDataset, Preprocess
from introspect.models import meta_of, zfnet
from introspect.plot import line_plot, table_image
from introspect.render import save_png
from introspect_filters.figure import filters_picture, spectrum_picture
from introspect_filters.spectrum import energy_beyond

ROOT = Path(__file__).resolve().parent.parent
DATA = Path("/usr/share/datasets/fashion-mnist")
SIZE = 64
#: The two first layers of the paper's comparison: (name, kernel, stride, padding).
LAYOUTS = (("11x11_s4", 11, 4, 0), ("7x7_s2", 7, 2, 1))


def bundled(figures: Path) -> None:
    model = introspect.load_model(None)
    images = ImageFolderDataset(ROOT / "introspect" / "data" / "images", Preprocess.from_meta(meta_of(model)))
    result = introspect.first_layer_filters(model, images)
    save_png(figures / "filters_bundled_conv1.png", filters_picture(result))
    save_png(figures / "filters_bundled_spectrum.png", spectrum_picture(result))
    print(f"bundled model {result.name}: {len(result.weights)} filters {result.kernel_size[0]}x{result.kernel_size[1]} "
          f"stride {result.stride[0]}, {result.images_seen} images: {result.dead_count} dead, mean high-frequency "
          f"energy {result.mean_high_frequency:.3f}, mean aliasing energy {result.mean_aliasing:.3f}")


def build(kernel: int, stride: int, padding: int, seed: int):
    """A small ZFNet-shaped net with the given conv1 (grey, tied filters from N(0, 1e-2)); He init above it."""
    from introspect.models.zfnet import pool5_size_for
    from introspect.training import PAPER_INIT_STD, tie_input_channels

    kwargs = {"num_classes": 10, "widths": (32, 32, 48, 48, 32), "fc": 128, "conv1_kernel": kernel,
              "conv1_stride": stride, "conv1_padding": padding, "conv2_stride": 1, "conv2_padding": 2,
              "drop_layers": ("conv3", "conv4"), "lrn": False, "dropout": 0.0}
    kwargs["pool5_size"] = pool5_size_for(SIZE, **kwargs)
    torch.manual_seed(seed)
    model = zfnet(**kwargs)
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            torch.nn.init.zeros_(module.bias)
    torch.nn.init.normal_(model.features[0].weight, 0.0, PAPER_INIT_STD)  # conv1: the paper's N(0, 1e-2)
    return tie_input_channels(model), kwargs


def train_pair(args, figures: Path) -> list[dict]:
    from introspect.training import BatchTransform, TrainConfig, channel_stats, evaluate, fashion_mnist, train_model

    cache = Path(tempfile.mkdtemp(prefix="filters-fm-"))
    train, test = fashion_mnist(DATA, cache)
    train = train.subset(torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:args.train])
    test = test.subset(torch.arange(args.test))
    mean, std = channel_stats(train, 3)
    transform = BatchTransform((3, SIZE, SIZE), mean, std)
    rows = []
    for name, kernel, stride, padding in LAYOUTS:
        model, kwargs = build(kernel, stride, padding, args.seed)
        x_test = transform(test.images)
        start = introspect.first_layer_filters(model, x_test)
        print(f"{name} at initialization: {start.dead_count} dead, mean aliasing energy {start.mean_aliasing:.3f}, "
              f"mean high-frequency energy {start.mean_high_frequency:.3f}")
        began = time.perf_counter()
        train_model(model, train, arch="zfnet", arch_kwargs=kwargs, input_size=(3, SIZE, SIZE), mean=mean, std=std,
                    out=cache / name, config=TrainConfig(epochs=args.epochs, crop_pad=SIZE // 14, seed=args.seed),
                    log=lambda line, name=name: print(f"  {name}: {line}"))
        _, acc = evaluate(model, test, transform)
        result = introspect.first_layer_filters(model, x_test)
        save_png(figures / f"filters_{name}.png", filters_picture(result))
        rows.append({"name": name, "result": result, "start": start, "test_acc": acc,
                     "seconds": time.perf_counter() - began})
        print(
            f"{name}: test accuracy {acc:.3f} on {len(test)} images; {result.dead_count}/{len(result.weights)} dead "
            f"({', '.join(r for r in result.reasons if r) or 'none'}); mean aliasing energy {result.mean_aliasing:.3f} "
            f"(above {result.nyquist[0]:.3g} cycles/pixel); "
            f"mean high-frequency energy {result.mean_high_frequency:.3f}; "
            f"median filter norm {result.to_dict()['median_norm']:.3f}"
        )
    return rows


def comparison_figure(rows: list[dict]) -> np.ndarray:
    """A table of the numbers, and the share of energy beyond each frequency for both first layers."""
    header = ["conv1", "test acc", "dead", "never active", "low norm", "Nyquist", "aliasing (init)", "aliasing",
              "HF (init)", "HF"]
    table = []
    for r in rows:
        res = r["result"]
        d = res.to_dict()
        table.append(
            [
                r["name"],
                f"{r['test_acc']:.3f}",
                f"{res.dead_count}/{len(res.weights)}",
                d["never_active"],
                d["negligible_norm"],
                f"{res.nyquist[0]:.3g}",
                f"{r['start'].mean_aliasing:.3f}",
                f"{res.mean_aliasing:.3f}",
                f"{r['start'].mean_high_frequency:.3f}",
                f"{res.mean_high_frequency:.3f}",
            ]
        )
    cutoffs = np.linspace(0.0, 0.5, 51)
    curves = {r["name"]: energy_beyond(torch.fft.ifftshift(r["result"].spectrum.double(), dim=(-2, -1)), cutoffs)
              for r in rows}
    plot = line_plot(
        cutoffs,
        curves,
        title="share of filter energy with max(|fy|,|fx|) > f (Nyquist: s4 0.125, s2 0.25)",
        xlabel="f (cycles per pixel)",
        ylabel="share",
        ylim=(0.0, 1.0),
        markers=False,
        size=(520, 300),
    )
    parts = [table_image(header, table, "first layers trained on Fashion-MNIST (64x64)"), plot]
    width = max(p.shape[1] for p in parts)
    return np.concatenate([np.pad(p, ((4, 4), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in parts])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundled-only", action="store_true", help="only report the bundled model")
    parser.add_argument("--train", type=int, default=10000, help="training images (default 10000)")
    parser.add_argument("--test", type=int, default=2000, help="test images for accuracy and dead filters")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figures", type=Path, default=ROOT / "examples" / "figures")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    bundled(args.figures)
    if args.bundled_only:
        return
    if not DATA.is_dir():
        print(f"{DATA} not found: skipping the trained comparison (pass --bundled-only to silence this)")
        return
    rows = train_pair(args, args.figures)
    save_png(args.figures / "filters_comparison.png", comparison_figure(rows))
    print(f"figures written to {args.figures}")


if __name__ == "__main__":
    main()
