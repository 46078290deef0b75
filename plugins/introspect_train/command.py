"""The ``introspect train`` command."""
from __future__ import annotations

from pathlib import Path

import click
import torch

from introspect.plugin import IntrospectError, emit, note, parse_arch_args

#: Options that shape the network: fixed by the checkpoint when resuming.
_ARCH_OPTIONS = ("arch", "widths", "fc", "no_lrn", "drop_layers", "dropout", "arch_args", "input_size", "init_std")
#: Options of the recipe that a resumed run must keep (compared with the checkpoint's values).
_FIXED_ON_RESUME = {"batch_size": "batch_size", "momentum": "momentum", "weight_decay": "weight_decay",
                    "filter_radius": "filter_radius", "crop_pad": "crop_pad", "seed": "seed", "val_split": "val_split"}


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


def _build(arch: str, kwargs: dict, input_size: tuple[int, int, int], seed: int, init_std: float | None,
           tie: bool = False):
    """Build ``arch`` for ``input_size`` (fitting ZFNet's ``pool5_size`` when needed), initialized with
    N(0, ``init_std``) (and grey first-layer filters when ``tie``); returns ``(model, kwargs)``."""
    from introspect.plugin import get_arch, init_paper, tie_input_channels

    spec = get_arch(arch)
    torch.manual_seed(seed)
    model = spec.build(**kwargs)
    problem = _dry_run(model, input_size)
    if problem and "pool5_size" not in kwargs and hasattr(model, "features"):
        with torch.no_grad():
            try:
                size = model.features(torch.zeros(1, *input_size)).shape[-1]
            except RuntimeError:
                size = None
        if size:
            try:
                candidate = spec.build(**kwargs, pool5_size=int(size))
            except IntrospectError:
                candidate = None
            if candidate is not None and _dry_run(candidate, input_size) is None:
                kwargs = {**kwargs, "pool5_size": int(size)}
                torch.manual_seed(seed)
                model, problem = spec.build(**kwargs), None
    if problem:
        raise IntrospectError(
            f"a {'x'.join(map(str, input_size))} input does not fit architecture {arch!r} ({problem}); "
            "choose another --input-size or architecture options"
        )
    if init_std is not None:
        init_paper(model, init_std, generator=torch.Generator().manual_seed(seed))
        if tie:
            tie_input_channels(model)
    return model, kwargs


def _dry_run(model, input_size) -> str | None:
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, *input_size))
    except (RuntimeError, ValueError) as exc:
        return str(exc).strip().splitlines()[0][:160]
    return None


def _load_data(data: Path, input_size, cache: Path):
    """``(train, test or None, kind)`` for an IDX folder or an image folder."""
    from introspect.plugin import fashion_mnist, image_folder, is_idx_folder

    if not data.exists():
        raise IntrospectError(
            f"data folder not found: {data}; pass an image folder or a folder of Fashion-MNIST IDX files"
        )
    if not data.is_dir():
        raise IntrospectError(f"{data} is a file; pass a folder (one subfolder per class, or Fashion-MNIST IDX files)")
    if is_idx_folder(data):
        train, test = fashion_mnist(data, cache)
        return train, test, "fashion-mnist"
    return image_folder(data, input_size), None, "image-folder"


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
    from introspect.plugin import (
        TrainConfig,
        channel_stats,
        check_run_folder,
        read_training_checkpoint,
        resolve_device,
        split,
        train_model,
    )

    dev = resolve_device(device)
    ckpt = read_training_checkpoint(resume) if resume is not None else None
    saved = TrainConfig.from_dict((ckpt or {}).get("extra", {}).get("config") or {}) if ckpt else None
    if ckpt is not None:
        for name in _ARCH_OPTIONS:
            if _given(ctx, name):
                raise IntrospectError(
                    f"--{name.replace('_', '-')} cannot change when resuming: the architecture and input "
                    "come from the checkpoint; drop the option"
                )
        for name, key in _FIXED_ON_RESUME.items():
            if _given(ctx, name) and getattr(saved, key) != ctx.params[name]:
                raise IntrospectError(f"--{name.replace('_', '-')} {ctx.params[name]} differs from the checkpoint's "
                                      f"{getattr(saved, key)}; drop it to resume the same run")
        if _given(ctx, "no_flip") and saved.flip == no_flip:
            raise IntrospectError("--no-flip differs from the checkpoint's setting; drop it to resume the same run")
    out = out if out is not None else (resume.parent if resume is not None else Path("introspect-train"))
    check_run_folder(out, resume=ckpt is not None, force=force)  # before the data cache is written there

    if ckpt is not None:
        size = tuple(int(v) for v in ckpt["input_size"])
    else:
        size = _input_size(input_size)
    train_set, test_set, kind = _load_data(data, size or (3, 64, 64), out / "data")
    if size is None:
        from introspect.plugin import get_arch

        size = (3, 64, 64) if kind == "fashion-mnist" else tuple(get_arch(arch).input_size)
        if kind == "image-folder":
            train_set, test_set, kind = _load_data(data, size, out / "data")
    classes = list(train_set.classes)

    if ckpt is not None:
        if list(ckpt.get("classes") or []) != classes:
            raise IntrospectError(
                f"the checkpoint's classes {ckpt.get('classes')} are not DATA's {classes}; resume on the same data"
            )
        config = saved
        config.epochs = epochs if _given(ctx, "epochs") else saved.epochs  # the checkpoint's own target
        for name in ("lr_gamma", "patience", "workers", "plateau"):
            if _given(ctx, name):
                setattr(config, name, ctx.params[name])
        if _given(ctx, "lr_steps"):
            config.lr_steps = _ints(lr_steps, "--lr-steps") or ()
        arch, arch_kwargs = ckpt["arch"], dict(ckpt.get("arch_kwargs") or {})
        mean, std = tuple(ckpt["mean"]), tuple(ckpt["std"])
        model, _ = _build(arch, arch_kwargs, size, config.seed, None)
        done = int(ckpt["extra"]["epoch"])
        note(f"resuming from {resume} after epoch {done}" + (f", continuing at lr {lr:g}" if _given(ctx, "lr") else ""))
    else:
        config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay,
                             lr_steps=_ints(lr_steps, "--lr-steps") or (), lr_gamma=lr_gamma, plateau=plateau,
                             patience=patience, filter_radius=filter_radius,
                             crop_pad=crop_pad if crop_pad is not None else size[1] // 14, flip=not no_flip, seed=seed,
                             workers=workers, init_std=init_std, val_split=val_split)
        arch_kwargs = {"num_classes": len(classes), **parse_arch_args(arch_args)}
        if size[0] != 3:
            arch_kwargs["in_channels"] = size[0]
        if widths is not None:
            arch_kwargs["widths"] = list(_ints(widths, "--widths", 5))
        if fc is not None:
            arch_kwargs["fc"] = fc
        if no_lrn:
            arch_kwargs["lrn"] = False
        if drop_layers is not None:
            arch_kwargs["drop_layers"] = [d.strip() for d in drop_layers.split(",") if d.strip()]
        if dropout is not None:
            arch_kwargs["dropout"] = dropout
        config.check()
        if not init_std > 0:
            raise IntrospectError(f"--init-std must be positive, got {init_std}; the paper uses 0.01")
        # grey images fed to an RGB model: grey first-layer filters (see tie_input_channels)
        config.tie_channels = kind == "fashion-mnist" and size[0] == 3
        model, arch_kwargs = _build(arch, arch_kwargs, size, seed, init_std, tie=config.tie_channels)
        note(f"computing the mean and std of {kind} {data}")
        mean, std = channel_stats(train_set, size[0])

    val_set = None
    if config.val_split:
        train_set, val_set = split(train_set, config.val_split, config.seed)
    note(f"training {arch} {arch_kwargs} on {len(train_set)} {kind} images ({len(classes)} classes), "
         f"input {'x'.join(map(str, size))}, on {dev}; checkpoints in {out}")
    model.to(dev)
    result = train_model(
        model,
        train_set,
        arch=arch,
        arch_kwargs=arch_kwargs,
        input_size=size,
        mean=mean,
        std=std,
        out=out,
        config=config,
        val_set=val_set,
        test_set=test_set,
        resume=ckpt,
        set_lr=lr if (ckpt is not None and _given(ctx, "lr")) else None,
        progress=not as_json,
        log=note,
        force=force,
    )
    last = result.last
    text = f"trained {arch} to epoch {last.get('epoch', 0)} in {result.seconds:.0f}s"
    for name in ("train", "val", "test"):
        if f"{name}_acc" in last:
            text += f"; {name} accuracy {last[f'{name}_acc']:.4f}"
    text += f"\ncheckpoints in {out}" + (
        f" (last: {result.checkpoints[-1].name})" if result.checkpoints else " (none written: already at --epochs)"
    )
    emit(result.to_dict(), as_json, text)
