"""A whole training run as one call: :func:`train` (also ``introspect.train``).

It reads the data folder, builds and initializes the architecture for the input size (fitting ZFNet's
``pool5_size``), computes the normalization, holds out a validation split, checks that a resumed run
keeps its recipe, and runs :func:`~introspect.training.loop.train_model`. ``introspect train`` maps
its options onto it.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from introspect.core.results import Progress
from introspect.errors import IntrospectError
from introspect.training.data import channel_stats, load_data, split
from introspect.training.loop import TrainResult, read_training_checkpoint, train_model
from introspect.training.recipe import TrainConfig, build_model

#: Settings of the recipe that a resumed run must keep (compared with the checkpoint's values).
FIXED_ON_RESUME = ("batch_size", "momentum", "weight_decay", "filter_radius", "crop_pad", "seed", "val_split", "flip")
#: Settings a resumed run may change.
CHANGEABLE_ON_RESUME = ("lr_gamma", "patience", "workers", "plateau", "lr_steps")


def train(
    model: str | None,
    dataset: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    arch_kwargs: dict | None = None,
    input_size: Sequence[int] | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    momentum: float | None = None,
    weight_decay: float | None = None,
    lr_steps: Sequence[int] | None = None,
    lr_gamma: float | None = None,
    plateau: bool | None = None,
    patience: int | None = None,
    init_std: float | None = None,
    filter_radius: float | None = None,
    crop_pad: int | None = None,
    flip: bool | None = None,
    val_split: float | None = None,
    seed: int | None = None,
    workers: int | None = None,
    resume: str | os.PathLike | None = None,
    force: bool = False,
    device: str | torch.device | None = "auto",
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train architecture ``model`` on the data in folder ``dataset`` with the paper's recipe (Sec. 3).

    A setting left at None takes the paper's default (see :class:`~introspect.training.TrainConfig`),
    or, with ``resume``, the checkpoint's.

    Args:
        model (str | None): the architecture to build and train, by its registered name (default
            ``"zfnet"``); None with ``resume`` (the architecture comes from the checkpoint).
        dataset (str | Path): an image folder (one subfolder per class) or a folder of Fashion-MNIST's
            four IDX files (``.gz`` or not), whose test set is then evaluated after every epoch.
        out (str | Path | None): folder for ``epoch_NNN.pt``, ``metrics.json`` and
            ``conv1_filters.png`` (default ``introspect-train``, or the folder of ``resume``).
        arch_kwargs (dict | None): builder arguments (``num_classes`` defaults to the data's classes;
            ``in_channels`` follows ``input_size``).
        input_size (sequence of 3 int | None): ``(C, H, W)`` with C 1 or 3 (default 3 x 64 x 64 for
            Fashion-MNIST, else the architecture's).
        epochs, batch_size, lr, momentum, weight_decay, lr_steps, lr_gamma, plateau, patience,
        filter_radius, crop_pad, flip, val_split, seed, workers: the recipe's settings
            (:class:`~introspect.training.TrainConfig`; ``crop_pad`` defaults to H // 14). With
            ``resume``, ``epochs`` defaults to the checkpoint's target, ``lr`` continues at a new
            rate, ``lr_steps``/``lr_gamma``/``plateau``/``patience``/``workers`` may change and the
            others must equal the checkpoint's.
        init_std (float | None): weights from N(0, ``init_std``), biases 0 (default 1e-2).
        resume (str | Path | None): an ``epoch_*.pt`` written by a training run: weights, optimizer
            state, schedule and metrics are restored and training continues with the next epoch.
        force (bool): replace an earlier run introspect wrote in ``out`` (default False).
        device (str | torch.device | None): ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``...
        progress (callable | None): ``progress(phase, done, total)`` after each mini-batch, ``phase``
            ``"epoch 3/10"`` (default None; the command draws it as a bar).
        log (callable | None): called with one line per step and per epoch.

    Returns:
        TrainResult: the metrics of every epoch and the checkpoints written.

    Raises:
        IntrospectError: missing or unreadable data, an input the architecture cannot take, a
            setting that cannot train, or a resumed run that changes its architecture or recipe.

    Example:
        >>> result = introspect.train("zfnet", "/usr/share/datasets/fashion-mnist", out="runs/zf",
        ...                           arch_kwargs={"widths": [32, 64, 128, 128, 64], "fc": 256},
        ...                           epochs=12, lr_steps=(8, 11))
        >>> result.last["test_acc"]
        0.9...
        >>> introspect.train(None, "/usr/share/datasets/fashion-mnist", resume="runs/zf/epoch_012.pt",
        ...                  epochs=15, lr=1e-3)
    """
    from introspect.models.load import resolve_device
    from introspect.output import check_run_folder

    arch, data = model, dataset
    say = log or (lambda line: None)
    settings: dict[str, Any] = {
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "momentum": momentum, "weight_decay": weight_decay,
        "lr_steps": lr_steps, "lr_gamma": lr_gamma, "plateau": plateau, "patience": patience,
        "filter_radius": filter_radius, "crop_pad": crop_pad, "flip": flip, "val_split": val_split, "seed": seed,
        "workers": workers,
    }
    given = {name: value for name, value in settings.items() if value is not None}
    if "lr_steps" in given:
        given["lr_steps"] = tuple(int(s) for s in given["lr_steps"])
    dev = resolve_device(device)
    ckpt = read_training_checkpoint(resume) if resume is not None else None
    if ckpt is not None:
        _check_resume(ckpt, given, arch=arch, arch_kwargs=arch_kwargs, input_size=input_size, init_std=init_std)
    folder = Path(out) if out is not None else (Path(resume).parent if resume is not None else Path("introspect-train"))
    check_run_folder(folder, resume=ckpt is not None, force=force)  # before the data cache is written there

    size = tuple(int(v) for v in ckpt["input_size"]) if ckpt is not None else _input_size(input_size)
    train_set, test_set, kind = load_data(data, size or (3, 64, 64), folder / "data")
    if size is None:
        from introspect.models import get_arch

        size = (3, 64, 64) if kind == "fashion-mnist" else tuple(get_arch(arch or "zfnet").input_size)
        if kind == "image-folder":
            train_set, test_set, kind = load_data(data, size, folder / "data")
    classes = list(train_set.classes)

    if ckpt is not None:
        config, arch, kwargs, net, mean, std = _resumed(ckpt, given, classes, size)
        say(f"resuming from {resume} after epoch {int(ckpt['extra']['epoch'])}"
            + (f", continuing at lr {lr:g}" if lr is not None else ""))
    else:
        arch = arch or "zfnet"
        config, kwargs, net = _fresh(arch, arch_kwargs, size, classes, given, init_std, kind)
        say(f"computing the mean and std of {kind} {data}")
        mean, std = channel_stats(train_set, size[0])

    val_set = None
    if config.val_split:
        train_set, val_set = split(train_set, config.val_split, config.seed)
    say(f"training {arch} {kwargs} on {len(train_set)} {kind} images ({len(classes)} classes), "
        f"input {'x'.join(map(str, size))}, on {dev}; checkpoints in {folder}")
    net.to(dev)
    return train_model(net, train_set, arch=arch, arch_kwargs=kwargs, input_size=size, mean=mean, std=std,
                       out=folder, config=config, val_set=val_set, test_set=test_set, resume=ckpt,
                       set_lr=lr if ckpt is not None else None, progress=progress, log=log, force=force)


def _resumed(ckpt: dict, given: dict[str, Any], classes: list[str], size: Sequence[int]) -> tuple:
    """``(config, arch, arch_kwargs, model, mean, std)`` of a resumed run (weights come in the loop)."""
    if list(ckpt.get("classes") or []) != classes:
        raise IntrospectError(
            f"the checkpoint's classes {ckpt.get('classes')} are not DATA's {classes}; resume on the same data"
        )
    config = _resumed_config(ckpt, given)
    arch, kwargs = ckpt["arch"], dict(ckpt.get("arch_kwargs") or {})
    model, _ = build_model(arch, kwargs, size, seed=config.seed, init_std=None)
    return config, arch, kwargs, model, tuple(ckpt["mean"]), tuple(ckpt["std"])


def _fresh(arch: str, arch_kwargs: dict | None, size: Sequence[int], classes: list[str], given: dict[str, Any],
           init_std: float | None, kind: str) -> tuple[TrainConfig, dict, torch.nn.Module]:
    """``(config, arch_kwargs, model)`` of a new run: the settings checked, the model built and initialized."""
    std_init = 1e-2 if init_std is None else init_std
    config = TrainConfig(**{"crop_pad": size[1] // 14, **given, "init_std": std_init})
    kwargs = {"num_classes": len(classes), **(arch_kwargs or {})}
    if size[0] != 3:
        kwargs["in_channels"] = size[0]
    config.check()
    if not std_init > 0:
        raise IntrospectError(f"--init-std must be positive, got {std_init}; the paper uses 0.01")
    # grey images fed to an RGB model: grey first-layer filters (see tie_input_channels)
    config.tie_channels = kind == "fashion-mnist" and size[0] == 3
    model, kwargs = build_model(arch, kwargs, size, seed=config.seed, init_std=std_init, tie=config.tie_channels)
    return config, kwargs, model


def _input_size(size: Sequence[int] | None) -> tuple[int, int, int] | None:
    if size is None:
        return None
    values = tuple(int(v) for v in size)
    if len(values) != 3 or values[0] not in (1, 3) or min(values) < 1:
        raise IntrospectError(f"input_size must be (C, H, W) with C 1 or 3, got {tuple(size)}; e.g. (3, 64, 64)")
    return (values[0], values[1], values[2])


def _check_resume(ckpt: dict, given: dict[str, Any], **fixed: Any) -> None:
    """Refuse a resumed run that changes its architecture, input or recipe."""
    for name, value in fixed.items():
        if value is not None:
            raise IntrospectError(f"{name} cannot change when resuming: the architecture and input come from the "
                                  "checkpoint; leave it out")
    saved = TrainConfig.from_dict((ckpt.get("extra") or {}).get("config") or {})
    for name in FIXED_ON_RESUME:
        if name in given and getattr(saved, name) != given[name]:
            raise IntrospectError(f"{name} {given[name]} differs from the checkpoint's {getattr(saved, name)}; "
                                  "leave it out to resume the same run")


def _resumed_config(ckpt: dict, given: dict[str, Any]) -> TrainConfig:
    """The checkpoint's settings, with the target epoch and the changeable settings given."""
    config = TrainConfig.from_dict((ckpt.get("extra") or {}).get("config") or {})
    if "epochs" in given:
        config.epochs = given["epochs"]
    for name in CHANGEABLE_ON_RESUME:
        if name in given:
            setattr(config, name, given[name])
    return config


__all__ = ["train", "FIXED_ON_RESUME", "CHANGEABLE_ON_RESUME"]
