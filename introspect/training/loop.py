"""The training loop: :func:`train_model` runs the recipe epoch by epoch, writing checkpoints.

Every epoch writes an introspect checkpoint (:func:`introspect.models.save_checkpoint`) carrying the
architecture, classes, input size and normalization, and in ``extra`` the optimizer state, the epoch,
the schedule state, the configuration and the metrics so far; :func:`train_model` resumes from one
with the very same optimizer state. Each epoch draws its shuffling, crops, flips and dropout masks from
generators seeded by ``(seed, epoch)``, so a resumed run repeats the uninterrupted one.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from introspect.core.device import model_device
from introspect.core.display import Shown
from introspect.core.results import Progress
from introspect.errors import IntrospectError
from introspect.training.data import BatchTransform, _batches
from introspect.training.recipe import LRSchedule, TrainConfig, renormalize_filters


# --------------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------------
@dataclass(repr=False)
class TrainResult(Shown):
    """What a training run produced.

    Attributes:
        arch (str), arch_kwargs (dict): the architecture, as the checkpoints record it.
        classes (list[str]), input_size (tuple), mean, std (tuple): as the checkpoints record them.
        history (list[dict]): one row per epoch: ``epoch``, ``lr``, ``train_loss``, ``train_acc``,
            ``val_loss``/``val_acc`` and ``test_loss``/``test_acc`` when those sets exist,
            ``renormalized`` (filters scaled back in the epoch), ``seconds``.
        checkpoints (list[Path]): the checkpoints written by this run, one per epoch.
        seconds (float): wall-clock time of this run.
    """

    arch: str
    arch_kwargs: dict
    classes: list[str]
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    history: list[dict] = field(default_factory=list)
    checkpoints: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def _repr_lines(self) -> list[str]:
        last = self.last
        scores = ", ".join(f"{k} {last[k]:.4f}" for k in ("train_acc", "val_acc", "test_acc") if k in last)
        return [f"TrainResult: {self.arch} on {len(self.classes)} classes, {'x'.join(map(str, self.input_size))} "
                f"inputs, {len(self.history)} epochs in {self.seconds:.1f} s",
                f"  last epoch: {scores or 'none run'}; {len(self.checkpoints)} checkpoints"]

    def _figures(self) -> dict:
        return {}  # a training run has numbers (history), no figure

    @property
    def last(self) -> dict:
        """The last epoch's metrics (empty before the first epoch)."""
        return self.history[-1] if self.history else {}

    def to_dict(self) -> dict:
        return {
            "arch": self.arch, "arch_kwargs": self.arch_kwargs, "classes": self.classes,
            "input_size": list(self.input_size), "mean": list(self.mean), "std": list(self.std),
            "history": self.history, "last": self.last, "checkpoints": [str(p) for p in self.checkpoints],
            "seconds": round(self.seconds, 2),
        }

    def save(self, out: str | os.PathLike) -> list[Path]:
        """Write ``metrics.json`` (this object) into ``out``; returns the written paths."""
        from introspect.render import OutputDir

        with OutputDir(out) as od:
            od.save_json("metrics.json", self.to_dict())
        return od.files


def _cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7919) % (2**63 - 1)


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset, transform: BatchTransform, batch_size: int = 256, workers: int = 0
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of ``model`` on ``dataset`` (no augmentation).

    Args:
        model (nn.Module): runs in eval mode on its own device; its mode is restored afterwards.
        dataset: yields ``(image, label)``; ``transform`` turns image batches into input.
        batch_size (int): images per forward pass (default 256).
        workers (int): data-loading processes for datasets that read files (default 0).

    Returns:
        tuple[float, float]: ``(loss, accuracy)``.

    Example:
        >>> loss, acc = evaluate(model, test, BatchTransform((3, 64, 64), mean, std))
    """
    was_training = model.training
    model.eval()
    device = model_device(model)
    loss_sum, correct, count = 0.0, 0, 0
    try:
        for images, labels in _batches(dataset, torch.arange(len(dataset)), batch_size, workers):
            x, y = transform(images).to(device), labels.to(device)
            out = model(x)
            loss_sum += float(F.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            count += len(y)
    finally:
        model.train(was_training)
    return loss_sum / max(count, 1), correct / max(count, 1)


def filter_grid(model: nn.Module, layer: nn.Conv2d | None = None):
    """The first convolutional layer's filters as one RGB picture (each filter scaled to 0..255).

    Returns:
        numpy.ndarray: ``uint8`` ``H x W x 3``, or ``None`` when the model has no 3- or 1-channel conv.
    """
    import numpy as np

    from introspect.render import grid, to_uint8

    conv = layer or next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None or conv.weight.shape[1] not in (1, 3):
        return None
    w = conv.weight.detach().cpu().float()
    zoom = max(1, 28 // max(w.shape[-2:]))
    tiles = [np.kron(to_uint8(f), np.ones((zoom, zoom, 1), dtype=np.uint8)) for f in w]
    return grid(tiles, ncols=int(math.ceil(math.sqrt(len(tiles)))), pad=2)


def train_model(
    model: nn.Module,
    train_set,
    *,
    arch: str,
    arch_kwargs: dict,
    input_size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    out: str | os.PathLike,
    config: TrainConfig | None = None,
    val_set=None,
    test_set=None,
    resume: dict | None = None,
    set_lr: float | None = None,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
    force: bool = False,
) -> TrainResult:
    """Train ``model`` with the paper's recipe, writing a checkpoint per epoch into ``out``.

    Args:
        model (nn.Module): the network, already built and initialized (see :func:`init_paper`), on
            the device to train on. On resume, its weights are replaced by the checkpoint's.
        train_set: yields ``(image, label)`` (``C x h x w`` ``uint8`` or float ``[0, 1]``) and has
            ``classes``; e.g. :class:`TensorImageDataset` or :func:`image_folder`.
        arch (str), arch_kwargs (dict): how to rebuild ``model`` (stored in each checkpoint).
        input_size (tuple[int, int, int]): ``(C, H, W)`` the model takes.
        mean, std (sequence of float): per-channel normalization (stored in each checkpoint).
        out (str | Path): folder for ``epoch_001.pt``, ``epoch_002.pt``..., ``metrics.json`` and
            ``conv1_filters.png`` (the first layer's filters, refreshed every epoch).
        config (TrainConfig | None): the recipe's settings (default: the paper's, 10 epochs).
        val_set, test_set: optional data sets evaluated after every epoch (``val_loss`` is what
            ``plateau`` watches; ``test_acc`` is reported).
        resume (dict | None): a checkpoint dict written by this function (``torch.load`` of an
            ``epoch_*.pt``): weights, optimizer state, schedule and metrics are restored and
            training continues with the next epoch, up to ``config.epochs``. The schedule's state
            (current rate, plateau counters) comes from the checkpoint, its settings (``lr_steps``,
            ``plateau``...) from ``config``.
        set_lr (float | None): on resume, continue at this learning rate (lowering it by hand, as
            in the paper); default: the checkpoint's.
        progress (callable | None): ``progress(phase, done, total)`` after each mini-batch, with
            ``phase`` ``"epoch 3/10"`` and ``total`` the epoch's mini-batches (default None).
        log (callable | None): called with a one-line summary after each epoch.
        force (bool): replace an earlier run introspect wrote in ``out`` (default False). ``out``
            follows the run-folder rules of :func:`introspect.output.check_run_folder`: a folder of
            an earlier run is refused unless ``resume`` is given or ``force`` is True.

    Returns:
        TrainResult: the metrics of every epoch and the checkpoints written.

    Example:
        >>> train, test = fashion_mnist("/usr/share/datasets/fashion-mnist", "/tmp/fm")
        >>> net = init_paper(zfnet(num_classes=10, widths=(32, 64, 128, 128, 64), fc=256, pool5_size=4,
        ...                        conv1_padding=3, conv2_stride=1, conv2_padding=2))
        >>> result = train_model(net, train, arch="zfnet", arch_kwargs={...}, input_size=(3, 64, 64),
        ...                      mean=(0.286,) * 3, std=(0.353,) * 3, out="runs/zf", test_set=test,
        ...                      config=TrainConfig(epochs=12, lr_steps=(8, 11), crop_pad=4))
        >>> result.last["test_acc"]
        0.92...
    """
    from introspect.models.load import save_checkpoint
    from introspect.output import RunFolder

    config = config or TrainConfig()
    config.check()
    input_size = tuple(int(v) for v in input_size)
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    classes = list(train_set.classes)
    device = model_device(model)
    transform = BatchTransform(input_size, mean, std, pad=config.crop_pad, flip=config.flip)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    schedule = LRSchedule(config.lr, steps=config.lr_steps, gamma=config.lr_gamma, plateau=config.plateau,
                          patience=config.patience)
    history, start = ([], 0) if resume is None else _restore(model, optimizer, schedule, config, resume, set_lr)
    if len(train_set) == 0:
        raise IntrospectError("the training set is empty; give a folder with images")

    size = (int(input_size[0]), int(input_size[1]), int(input_size[2]))
    result = TrainResult(arch=arch, arch_kwargs=dict(arch_kwargs), classes=classes, input_size=size,
                         mean=mean, std=std, history=history)
    began = time.perf_counter()
    devices = [device.index or 0] if device.type == "cuda" else []
    # the run folder is checked, locked and marked before any work (see introspect.output.RunFolder)
    with RunFolder(out, resume=resume is not None, force=force, epochs=config.epochs) as run, \
            torch.random.fork_rng(devices=devices):
        for epoch in range(start + 1, config.epochs + 1):
            row = _train_epoch(model, train_set, optimizer, schedule, transform, config, epoch, progress)
            for name, data in (("val", val_set), ("test", test_set)):
                if data is not None:
                    row[f"{name}_loss"], row[f"{name}_acc"] = evaluate(
                        model, data, transform, max(config.batch_size, 256), config.workers
                    )
            watched = row.get("val_loss", row["train_loss"])
            schedule.step(epoch, watched)
            history.append(row)
            extra = {"epoch": epoch, "optimizer": _cpu(optimizer.state_dict()), "scheduler": schedule.state_dict(),
                     "metrics": [dict(r) for r in history], "config": config.to_dict()}
            name = f"epoch_{epoch:03d}.pt"
            run.write(name, lambda path, extra=extra: save_checkpoint(path, model, arch=arch, arch_kwargs=arch_kwargs,
                                                         classes=classes, input_size=input_size, mean=mean,
                                                         std=std, extra=extra))
            result.seconds = time.perf_counter() - began
            run.save_json("metrics.json", result.to_dict() | {"checkpoints": [str(p) for p in result.checkpoints]
                                                               + [str(Path(out) / name)]})
            picture = filter_grid(model)
            if picture is not None:
                run.save_png("conv1_filters.png", picture)
            result.checkpoints.append(Path(out) / name)
            if log is not None:
                log(_summary(row, config.epochs))
        run.finish()
    result.seconds = time.perf_counter() - began
    return result



def _restore(model: nn.Module, optimizer: torch.optim.Optimizer, schedule: LRSchedule, config: TrainConfig,
             resume: dict, set_lr: float | None) -> tuple[list[dict], int]:
    """Load a checkpoint's weights, optimizer and schedule state; returns ``(history, last epoch)``."""
    extra = resume.get("extra") or {}
    if "optimizer" not in extra or "epoch" not in extra:
        raise IntrospectError(
            "the checkpoint to resume from has no optimizer state; "
            "resume from an epoch_*.pt written by `introspect train`"
        )
    model.load_state_dict(resume["state_dict"])
    from introspect.core.device import refuse_diverged

    refuse_diverged(model)  # resuming a diverged run only spreads the NaN
    optimizer.load_state_dict(extra["optimizer"])
    schedule.load_state_dict(extra.get("scheduler") or {"lr": config.lr})
    schedule.steps = sorted(config.lr_steps)
    schedule.gamma, schedule.plateau, schedule.patience = config.lr_gamma, config.plateau, config.patience
    if set_lr is not None:
        if not set_lr > 0:
            raise IntrospectError(f"--lr must be positive, got {set_lr}; e.g. 0.001")
        schedule.lr = float(set_lr)
    history = list(extra.get("metrics") or [])
    start = int(extra["epoch"])
    return history, start


def _summary(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"lr {row['lr']:.3g}", f"loss {row['train_loss']:.4f}",
             f"acc {row['train_acc']:.4f}"]
    for name in ("val", "test"):
        if f"{name}_acc" in row:
            parts.append(f"{name} loss {row[f'{name}_loss']:.4f} acc {row[f'{name}_acc']:.4f}")
    parts.append(f"{row['seconds']:.0f}s")
    return "  ".join(parts)


def _train_epoch(
    model, train_set, optimizer, schedule, transform, config: TrainConfig, epoch: int, progress: Progress | None
) -> dict:
    began = time.perf_counter()
    for group in optimizer.param_groups:
        group["lr"] = schedule.lr
    seed = _epoch_seed(config.seed, epoch)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed + 1)  # dropout masks (all devices); the caller forked the RNG state
    order = torch.randperm(len(train_set), generator=generator)
    device = model_device(model)
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, renormalized = 0, 0
    steps = math.ceil(len(order) / config.batch_size)
    batches = _batches(train_set, order, config.batch_size, config.workers)
    phase = f"epoch {epoch}/{config.epochs}"
    if progress is not None:
        progress(phase, 0, steps)
    for done, (images, labels) in enumerate(batches, 1):
        x = transform(images, train=True, generator=generator).to(device, non_blocking=True)
        y = labels.to(device, non_blocking=True)
        out = model(x)
        loss = F.cross_entropy(out, y)
        if not torch.isfinite(loss):
            raise IntrospectError(
                f"the loss became {float(loss)} in epoch {epoch}; lower --lr (e.g. {schedule.lr / 10:g})"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if config.filter_radius > 0:
            renormalized += renormalize_filters(model, config.filter_radius)
        loss_sum += loss.detach() * len(y)
        correct += (out.detach().argmax(1) == y).sum()
        seen += len(y)
        if progress is not None:
            progress(phase, done, steps)
    return {"epoch": epoch, "lr": schedule.lr, "train_loss": float(loss_sum) / seen, "train_acc": int(correct) / seen,
            "renormalized": renormalized, "seconds": round(time.perf_counter() - began, 2)}


def read_training_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint written by :func:`train_model` (with ``torch.load(weights_only=True)``).

    Raises:
        IntrospectError: missing, unreadable, not an introspect checkpoint, or without optimizer state.

    Example:
        >>> ckpt = read_training_checkpoint("runs/zf/epoch_005.pt")
        >>> ckpt["extra"]["epoch"]
        5
    """
    from introspect.models.load import FORMAT

    path = Path(path)
    if not path.is_file():
        raise IntrospectError(
            f"checkpoint to resume from not found: {path}; pass an epoch_*.pt written by `introspect train`"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise IntrospectError(
            f"cannot read checkpoint {path} ({first}); pass an epoch_*.pt written by `introspect train`"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise IntrospectError(
            f"{path} is not an introspect checkpoint; pass an epoch_*.pt written by `introspect train`"
        )
    extra = ckpt.get("extra") or {}
    if "optimizer" not in extra or "epoch" not in extra:
        raise IntrospectError(
            f"{path} holds no optimizer state to resume from; pass an epoch_*.pt written by `introspect train`"
        )
    return ckpt


__all__ = ["TrainResult", "evaluate", "filter_grid", "train_model", "read_training_checkpoint"]
