"""The ``introspect train`` command."""
from __future__ import annotations

from pathlib import Path

import click

from introspect.plugin import IntrospectError, emit, note, parse_arch_args

#: Options that shape the network: fixed by the checkpoint when resuming.
_ARCH_OPTIONS = ("arch", "widths", "fc", "no_lrn", "drop_layers", "dropout", "arch_args", "input_size", "init_std")
#: Options that are settings of the recipe, passed to :func:`introspect.train` when given.
_SETTINGS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "lr_steps", "lr_gamma", "plateau", "patience",
             "filter_radius", "crop_pad", "val_split", "seed", "workers")


def _ints(text: str | None, option: str, count: int | None = None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in str(text).replace(" ", "").split(",") if v != "")
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint=option) from None
    if count is not None and len(values) != count:
        raise click.BadParameter(f"expected {count} comma-separated integers, got {text!r}", param_hint=option)
    return values


def _input_size(text: str | None) -> tuple[int, int, int] | None:
    values = _ints(text, "--input-size")
    if values is None:
        return None
    if len(values) == 1:
        values = (3, values[0], values[0])
    elif len(values) == 2:
        values = (3, *values)
    if len(values) != 3 or values[0] not in (1, 3) or min(values) < 1:
        raise click.BadParameter(
            f"expected H (square, RGB), H,W or C,H,W with C 1 or 3, got {text!r}", param_hint="--input-size"
        )
    return values


def _given(ctx: click.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


@click.command("train")
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--arch", default="zfnet", show_default=True, metavar="NAME",
              help="Architecture to train (see `introspect models`).")
@click.option("--widths", default=None, metavar="W1,...,W5",
              help="Filters of conv1..conv5 (ZFNet; the paper's Table 3 'adjust layers'), e.g. 96,256,512,1024,512.")
@click.option("--fc", type=int, default=None, metavar="N", help="Units of fc6 and fc7 (ZFNet), e.g. 2048 or 8192.")
@click.option("--no-lrn", is_flag=True, help="Leave out the contrast normalization after pool1 and pool2.")
@click.option("--drop-layers", default=None, metavar="L1,L2",
              help="Remove layers (ZFNet: any of conv3,conv4,conv5,fc6,fc7; Table 3 'removed layers').")
@click.option(
    "--dropout",
    type=float,
    default=None,
    help="Dropout rate in the fully connected layers [architecture default: 0.5].",
)
@click.option("--arch-arg", "arch_args", multiple=True, metavar="KEY=VALUE",
              help="Any other builder argument, value as JSON (repeatable), e.g. --arch-arg conv2_stride=1.")
@click.option("--input-size", default=None, metavar="H|C,H,W",
              help="Model input: H for H x H RGB, or C,H,W. [default: 64 for Fashion-MNIST, else the architecture's]")
@click.option(
    "--epochs", type=int, default=10, show_default=True, help="Train until this epoch (total, also when resuming)."
)
@click.option("--batch-size", type=int, default=128, show_default=True, help="Mini-batch size.")
@click.option("--lr", type=float, default=1e-2, show_default=True,
              help="Learning rate; with --resume, continue at this rate (lowering it by hand).")
@click.option("--momentum", type=float, default=0.9, show_default=True, help="SGD momentum.")
@click.option(
    "--weight-decay", type=float, default=0.0, show_default=True, help="L2 weight decay (the paper names none)."
)
@click.option("--lr-steps", default=None, metavar="E1,E2",
              help="Multiply the learning rate by --lr-gamma after these epochs, e.g. 8,11.")
@click.option("--lr-gamma", type=float, default=0.1, show_default=True, help="Factor for each learning-rate step.")
@click.option("--plateau", is_flag=True,
              help="Also lower the rate when the loss (validation, else training) stops improving.")
@click.option(
    "--patience",
    type=int,
    default=2,
    show_default=True,
    help="Epochs without improvement before --plateau lowers the rate.",
)
@click.option("--init-std", type=float, default=1e-2, show_default=True,
              help="Weights start from N(0, STD), biases at 0 (the paper: 1e-2).")
@click.option("--filter-radius", type=float, default=0.1, show_default=True,
              help="Scale conv filters whose RMS exceeds this back to it after each step (0: off).")
@click.option("--crop-pad", type=int, default=None,
              help="Random-crop margin in pixels per side (0: no crops). [default: H/14, the paper's 224 of 256]")
@click.option("--no-flip", is_flag=True, help="No random horizontal flips.")
@click.option("--val-split", type=float, default=0.0, show_default=True,
              help="Hold out this fraction of the training data for validation (e.g. 0.1).")
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the initialization, shuffling, crops, flips, dropout.",
)
@click.option("--workers", type=int, default=0, show_default=True, help="Data-loading processes for image folders.")
@click.option("--resume", type=click.Path(path_type=Path), default=None, metavar="CKPT",
              help="Continue from a checkpoint written by this command (weights, optimizer, schedule).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder for epoch_NNN.pt checkpoints, metrics.json, conv1_filters.png. "
                   "[default: introspect-train, or the --resume checkpoint's folder]")
@click.option("--force", is_flag=True,
              help="Replace an earlier run introspect wrote in --out (without it such a folder is refused).")
@click.option(
    "--device",
    default="auto",
    show_default=True,
    metavar="auto|cpu|cuda",
    help="Where to train: auto picks CUDA when available.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result (metrics of every epoch) as JSON on stdout.")
@click.pass_context
def train_command(ctx, data, arch, widths, fc, no_lrn, drop_layers, dropout, arch_args, input_size, epochs, batch_size,
                  lr, momentum, weight_decay, lr_steps, lr_gamma, plateau, patience, init_std, filter_radius, crop_pad,
                  no_flip, val_split, seed, workers, resume, out, force, device, as_json):
    """Train a network on DATA with the paper's recipe (Sec. 3), a checkpoint per epoch.

    DATA is an image folder with one subfolder per class, or a folder holding Fashion-MNIST's four
    IDX files (.gz or not; e.g. /usr/share/datasets/fashion-mnist), read with torchvision's
    FashionMNIST class and evaluated on its test set after every epoch.

    \b
    Examples:
      introspect train --arch zfnet photos/ --input-size 224 --epochs 70 --lr-steps 30,60
      introspect train /usr/share/datasets/fashion-mnist --widths 32,64,128,128,64 --fc 256
      introspect train photos/ --drop-layers conv3,conv4 --out runs/no34      (Table 3 ablation)
      introspect train photos/ --resume runs/zf/epoch_010.pt --epochs 15 --lr 0.001
    """
    from introspect.plugin import PhaseBars, train

    if resume is not None:
        for name in _ARCH_OPTIONS:  # named as options here; the library names its own arguments
            if _given(ctx, name):
                raise IntrospectError(
                    f"--{name.replace('_', '-')} cannot change when resuming: the architecture and input "
                    "come from the checkpoint; drop the option"
                )
    settings = {name: ctx.params[name] for name in _SETTINGS if _given(ctx, name)}
    if "lr_steps" in settings:
        settings["lr_steps"] = _ints(lr_steps, "--lr-steps") or ()
    if _given(ctx, "no_flip"):
        settings["flip"] = not no_flip
    arch_kwargs = parse_arch_args(arch_args)
    if widths is not None:
        arch_kwargs["widths"] = list(_ints(widths, "--widths", 5) or ())
    if fc is not None:
        arch_kwargs["fc"] = fc
    if no_lrn:
        arch_kwargs["lrn"] = False
    if drop_layers is not None:
        arch_kwargs["drop_layers"] = [d.strip() for d in drop_layers.split(",") if d.strip()]
    if dropout is not None:
        arch_kwargs["dropout"] = dropout
    out = out if out is not None else (resume.parent if resume is not None else Path("introspect-train"))
    bars = None if as_json else PhaseBars()
    try:
        result = train(
            None if resume is not None else arch, data, out=out, resume=resume, force=force, device=device,
            arch_kwargs=None if resume is not None else arch_kwargs,
            input_size=None if resume is not None else _input_size(input_size),
            init_std=None if resume is not None else init_std, progress=bars, log=note, **settings,
        )
    finally:
        if bars is not None:
            bars.close()
    last = result.last
    text = f"trained {result.arch} to epoch {last.get('epoch', 0)} in {result.seconds:.0f}s"
    for name in ("train", "val", "test"):
        if f"{name}_acc" in last:
            text += f"; {name} accuracy {last[f'{name}_acc']:.4f}"
    text += f"\ncheckpoints in {out}" + (
        f" (last: {result.checkpoints[-1].name})" if result.checkpoints else " (none written: already at --epochs)"
    )
    emit(result.to_dict(), as_json, text)
