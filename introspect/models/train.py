"""The paper's training recipe (Zeiler & Fergus, Sec. 3).

Stochastic gradient descent on mini-batches of 128 with momentum 0.9 and learning rate 1e-2, lowered
by hand (:class:`LRSchedule` ``steps``, or a lower ``--lr`` when resuming) or when the monitored loss
stops improving (``plateau``); dropout 0.5 in the fully connected layers (the architecture's own);
weights drawn from N(0, 1e-2) and biases set to 0 (:func:`init_paper`); after every step, each
convolutional filter whose RMS exceeds a fixed radius of 1e-1 is scaled back to that radius
(:func:`renormalize_filters`). Training images are augmented with random crops and horizontal flips
(:class:`BatchTransform`).

Every epoch writes an introspect checkpoint (:func:`introspect.models.save_checkpoint`) carrying the
architecture, classes, input size and normalization, and in ``extra`` the optimizer state, the epoch,
the schedule state, the configuration and the metrics so far; :func:`train_model` resumes from one
with the very same optimizer state. Each epoch draws its shuffling, crops, flips and dropout masks from
generators seeded by ``(seed, epoch)``, so a resumed run repeats the uninterrupted one.

Data sets are anything that yields ``(image, label)`` with ``image`` a ``C x h x w`` tensor (``uint8``
or float in ``[0, 1]``): :class:`TensorImageDataset` (in memory; :func:`fashion_mnist` reads the
Fashion-MNIST IDX files through ``torchvision.datasets.FashionMNIST``) or :func:`image_folder`
(one subfolder per class).
"""
from __future__ import annotations

import gzip
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from introspect.errors import IntrospectError

#: The paper's hyper-parameters.
PAPER_LR = 1e-2
PAPER_MOMENTUM = 0.9
PAPER_BATCH_SIZE = 128
PAPER_INIT_STD = 1e-2
PAPER_FILTER_RADIUS = 1e-1

#: The four Fashion-MNIST (and MNIST) IDX files, as torchvision's ``FashionMNIST`` names them.
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


# --------------------------------------------------------------------------------------------------
# the recipe's pieces
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def renormalize_filters(model: nn.Module, radius: float = PAPER_FILTER_RADIUS) -> int:
    """Scale every ``nn.Conv2d`` filter whose RMS exceeds ``radius`` back to RMS ``radius``, in place.

    A filter is one output channel's weights (``in_channels/groups x kH x kW``); its RMS is
    ``sqrt(mean(w ** 2))``. Filters at or under the radius are left exactly as they are (bit for bit);
    biases are never touched. The paper applies this after every update (Sec. 3).

    Args:
        model (nn.Module): the network; every ``nn.Conv2d`` in it (subclasses included) is visited.
        radius (float): the fixed radius (default 0.1, the paper's).

    Returns:
        int: how many filters were scaled.

    Example:
        >>> conv = nn.Conv2d(1, 2, 3)
        >>> with torch.no_grad():
        ...     conv.weight.fill_(1.0)
        >>> renormalize_filters(conv)
        2
        >>> float(conv.weight.pow(2).mean().sqrt())
        0.1
    """
    if not radius > 0:
        raise IntrospectError(f"the filter radius must be positive, got {radius}; the paper uses 0.1")
    scaled = 0
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            w = module.weight
            rms = w.detach().pow(2).flatten(1).mean(1).sqrt()
            over = rms > radius
            if bool(over.any()):
                scale = torch.where(over, radius / rms.clamp_min(1e-30), torch.ones_like(rms))
                w.mul_(scale.view(-1, *([1] * (w.dim() - 1))))
                scaled += int(over.sum())
    return scaled


@torch.no_grad()
def init_paper(model: nn.Module, std: float = PAPER_INIT_STD, generator: torch.Generator | None = None) -> nn.Module:
    """Draw every ``nn.Conv2d`` and ``nn.Linear`` weight from N(0, ``std``) and set their biases to 0.

    Args:
        model (nn.Module): the network (changed in place).
        std (float): standard deviation of the weights (default 1e-2, the paper's).
        generator (torch.Generator | None): random source (default: torch's global one).

    Returns:
        nn.Module: ``model``.

    Example:
        >>> net = init_paper(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 2)))
        >>> float(net[2].bias.abs().sum())
        0.0
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            w = module.weight
            w.copy_(torch.randn(w.shape, generator=generator, dtype=w.dtype).mul_(std).to(w.device))
            if module.bias is not None:
                module.bias.zero_()
    return model


@torch.no_grad()
def tie_input_channels(model: nn.Module) -> nn.Module:
    """Give the first convolution the same weights for every input channel (for grey data fed as RGB).

    When every training image is grey replicated to three channels, the gradient of the first
    layer's weights is the same for each input channel, so weights that start equal stay equal: the
    filters are grey, respond to brightness only (also on colour photographs), and their deconvnet
    projections are grey. Independently drawn channels would instead keep an untrained random
    difference between channels forever. The shared weights are the first channel's divided by
    ``sqrt(C)``, so the filter's response to grey input has the same spread as before.

    Args:
        model (nn.Module): the network (changed in place); its first ``nn.Conv2d`` is tied.

    Returns:
        nn.Module: ``model``.

    Example:
        >>> net = tie_input_channels(init_paper(zfnet(num_classes=10)))
        >>> bool((net.features[0].weight[:, 0] == net.features[0].weight[:, 2]).all())
        True
    """
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is not None and conv.weight.shape[1] > 1:
        w = conv.weight
        w.copy_((w[:, :1] / math.sqrt(w.shape[1])).expand_as(w))
    return model


class LRSchedule:
    """The learning rate: lowered by hand at given epochs, and/or when a loss stops improving.

    Args:
        lr (float): the starting learning rate (default 1e-2).
        steps (sequence of int): multiply the rate by ``gamma`` after each of these epochs (1-based:
            ``steps=(8,)`` trains epochs 1-8 at ``lr`` and epoch 9 on at ``lr * gamma``).
        gamma (float): the factor (default 0.1).
        plateau (bool): also multiply by ``gamma`` when the monitored loss has not improved (by a
            relative ``threshold``) for more than ``patience`` epochs (default False).
        patience (int): epochs without improvement tolerated (default 2).
        threshold (float): relative improvement that counts (default 1e-4).
        min_lr (float): the rate never goes below this (default 1e-6).

    Example:
        >>> s = LRSchedule(0.01, steps=(2,))
        >>> [s.step(epoch) for epoch in (1, 2, 3)]
        [0.01, 0.001, 0.001]
    """

    def __init__(self, lr: float = PAPER_LR, steps: Sequence[int] = (), gamma: float = 0.1, plateau: bool = False,
                 patience: int = 2, threshold: float = 1e-4, min_lr: float = 1e-6) -> None:
        self.lr = float(lr)
        self.steps = sorted(int(s) for s in steps)
        self.gamma = float(gamma)
        self.plateau = bool(plateau)
        self.patience = int(patience)
        self.threshold = float(threshold)
        self.min_lr = float(min_lr)
        self.best = math.inf
        self.bad_epochs = 0

    def step(self, epoch: int, loss: float | None = None) -> float:
        """Account for the end of ``epoch`` (with its monitored ``loss``); returns the next epoch's rate."""
        if epoch in self.steps:
            self.lr = max(self.lr * self.gamma, self.min_lr)
        if self.plateau and loss is not None and math.isfinite(loss):
            if loss < self.best * (1 - self.threshold):
                self.best, self.bad_epochs = float(loss), 0
            else:
                self.bad_epochs += 1
                if self.bad_epochs > self.patience:
                    self.lr = max(self.lr * self.gamma, self.min_lr)
                    self.bad_epochs = 0
        return self.lr

    def state_dict(self) -> dict:
        """Plain numbers and lists (safe for ``torch.load(weights_only=True)``)."""
        return {"lr": self.lr, "steps": list(self.steps), "gamma": self.gamma, "plateau": self.plateau,
                "patience": self.patience, "threshold": self.threshold, "min_lr": self.min_lr,
                "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.lr = float(state["lr"])
        self.steps = sorted(int(s) for s in state.get("steps", []))
        for key in ("gamma", "threshold", "min_lr", "best"):
            if key in state:
                setattr(self, key, float(state[key]))
        self.plateau = bool(state.get("plateau", False))
        self.patience = int(state.get("patience", 2))
        self.bad_epochs = int(state.get("bad_epochs", 0))


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------
class TensorImageDataset(Dataset):
    """Images held in memory as one tensor, with their labels and class names.

    Args:
        images (torch.Tensor): ``N x C x h x w``, ``uint8`` (0..255) or float in ``[0, 1]``.
        targets (torch.Tensor | sequence of int): ``N`` labels in ``0 .. len(classes) - 1``.
        classes (sequence of str): class names, index = label.

    Example:
        >>> ds = TensorImageDataset(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), [0, 1, 0, 1], ["a", "b"])
        >>> ds[1][0].shape, ds[1][1]
        (torch.Size([1, 28, 28]), 1)
    """

    def __init__(self, images: torch.Tensor, targets, classes: Sequence[str]) -> None:
        if images.dim() == 3:
            images = images.unsqueeze(1)
        self.images = images
        self.targets = torch.as_tensor(targets, dtype=torch.long)
        self.classes = [str(c) for c in classes]
        if images.dim() != 4 or len(self.targets) != len(images):
            raise IntrospectError(
                f"images {tuple(images.shape)} and {len(self.targets)} labels do not match; check the data"
            )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], int(self.targets[index])

    def subset(self, indices: torch.Tensor) -> TensorImageDataset:
        """The images at ``indices`` (a new dataset sharing the class names)."""
        return TensorImageDataset(self.images[indices], self.targets[indices], self.classes)


def _find_idx(folder: Path, name: str) -> Path | None:
    for where in (folder, folder / "FashionMNIST" / "raw", folder / "raw"):
        for candidate in (where / name, where / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def is_idx_folder(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds the Fashion-MNIST training images as an IDX file (``.gz`` or not).

    Example:
        >>> is_idx_folder("/usr/share/datasets/fashion-mnist")
        True
    """
    folder = Path(folder)
    return folder.is_dir() and _find_idx(folder, IDX_FILES[0]) is not None


def _copy_idx(src: Path, dest: Path) -> None:
    if dest.exists() and dest.stat().st_mtime >= src.stat().st_mtime:
        return  # unpacked after the source last changed
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    opener = gzip.open if src.suffix == ".gz" else open
    try:
        with opener(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
        os.replace(tmp, dest)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        if tmp.exists():
            tmp.unlink()
        raise IntrospectError(
            f"cannot unpack {src} into {dest.parent}: {exc}; check the file and the --out folder"
        ) from None


def fashion_mnist(folder: str | os.PathLike, cache: str | os.PathLike) -> tuple[TensorImageDataset, TensorImageDataset]:
    """Read Fashion-MNIST's IDX files with ``torchvision.datasets.FashionMNIST`` (no download).

    The four files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte``, each optionally ``.gz``) are looked for in ``folder`` (or its
    ``FashionMNIST/raw`` / ``raw`` subfolder) and unpacked into ``cache/FashionMNIST/raw``, the layout
    torchvision expects; files already unpacked and up to date are kept.

    Args:
        folder (str | Path): e.g. ``/usr/share/datasets/fashion-mnist`` (Debian's package).
        cache (str | Path): a writable folder for the unpacked files.

    Returns:
        tuple: ``(train, test)`` :class:`TensorImageDataset` of ``N x 1 x 28 x 28`` ``uint8`` images
        with torchvision's class names (``"T-shirt/top"``, ..., ``"Ankle boot"``).

    Raises:
        IntrospectError: a file is missing, corrupt, or the cache is not writable.

    Example:
        >>> train, test = fashion_mnist("/usr/share/datasets/fashion-mnist", "/tmp/fm-cache")
        >>> len(train), len(test), train.classes[9]
        (60000, 10000, 'Ankle boot')
    """
    from torchvision.datasets import FashionMNIST

    folder, cache = Path(folder), Path(cache)
    found = {name: _find_idx(folder, name) for name in IDX_FILES}
    missing = [name for name, path in found.items() if path is None]
    present = {name: path for name, path in found.items() if path is not None}
    if missing:
        raise IntrospectError(
            f"{folder} lacks the Fashion-MNIST file(s) {', '.join(missing)} (.gz or unpacked); "
            "pass the folder holding all four IDX files"
        )
    raw = cache / "FashionMNIST" / "raw"
    for name, src in present.items():
        _copy_idx(src, raw / name)
    sets = []
    for train in (True, False):
        try:
            ds = FashionMNIST(str(cache), train=train, download=False)
        except Exception as exc:  # torchvision raises AssertionError/RuntimeError/ValueError on bad files
            raise IntrospectError(
                f"cannot read the IDX files in {folder}: "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
                "check that they are Fashion-MNIST IDX files"
            ) from None
        if len(ds.data) != len(ds.targets) or len(ds.data) == 0:
            raise IntrospectError(
                f"the IDX files in {folder} hold {len(ds.data)} images but {len(ds.targets)} labels; check the files"
            )
        if int(ds.targets.max()) >= len(ds.classes) or int(ds.targets.min()) < 0:
            raise IntrospectError(f"the IDX labels in {folder} are outside 0..{len(ds.classes) - 1}; check the files")
        sets.append(TensorImageDataset(ds.data.unsqueeze(1), ds.targets, ds.classes))
    return sets[0], sets[1]


def image_folder(root: str | os.PathLike, input_size: Sequence[int]):
    """A folder with one subfolder per class, read as ``[0, 1]`` tensors of ``input_size``.

    Images are resized (shorter side) and center-cropped exactly as :class:`introspect.images.Preprocess`
    does for the analysis commands; normalization and augmentation happen per batch
    (:class:`BatchTransform`).

    Args:
        root (str | Path): the folder (``root/cat/*.jpg``, ``root/dog/*.png``...).
        input_size (tuple[int, int, int]): ``(C, H, W)`` the model takes.

    Returns:
        introspect.images.ImageFolderDataset: with ``classes`` and ``targets``.

    Raises:
        IntrospectError: the folder is missing, holds no images, or has no class subfolders.

    Example:
        >>> ds = image_folder("flowers/", (3, 64, 64))
        >>> ds[0][0].shape, ds.classes[:2]
        (torch.Size([3, 64, 64]), ['daisy', 'rose'])
    """
    from introspect.images import ImageFolderDataset, Preprocess

    c = int(input_size[0])
    size = (c, int(input_size[1]), int(input_size[2]))
    ds = ImageFolderDataset(root, Preprocess(size, (0.0,) * c, (1.0,) * c))
    if not ds.classes:
        raise IntrospectError(
            f"{root} has no class subfolders; put each class's images in its own subfolder (root/cat/..., root/dog/...)"
        )
    if len(ds.classes) < 2:
        raise IntrospectError(
            f"{root} has only one class ({ds.classes[0]}); training a classifier needs at least two subfolders"
        )
    return ds


def _targets(dataset) -> torch.Tensor:
    if hasattr(dataset, "targets"):
        return torch.as_tensor(dataset.targets, dtype=torch.long)
    return torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


def split(dataset, fraction: float, seed: int = 0):
    """Split off a random ``fraction`` of ``dataset`` for validation: ``(train, val)``.

    Example:
        >>> train, val = split(ds, 0.1, seed=0)
    """
    if not 0 < fraction < 1:
        raise IntrospectError(f"--val-split must be between 0 and 1, got {fraction}; e.g. 0.1")
    n = len(dataset)
    n_val = int(round(n * fraction))
    if n_val < 1 or n_val >= n:
        raise IntrospectError(f"--val-split {fraction} of {n} images leaves an empty part; use another fraction")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    val_idx, train_idx = order[:n_val].sort().values, order[n_val:].sort().values
    if isinstance(dataset, TensorImageDataset):
        return dataset.subset(train_idx), dataset.subset(val_idx)
    from torch.utils.data import Subset

    parts: list[Any] = []
    for idx in (train_idx, val_idx):
        part: Any = Subset(dataset, idx.tolist())
        part.classes = list(dataset.classes)
        part.targets = _targets(dataset)[idx]
        parts.append(part)
    return parts[0], parts[1]


def channel_stats(dataset, channels: int, limit: int = 2000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of ``dataset``'s pixels (in ``[0, 1]``).

    Uses every image, or ``limit`` evenly spaced ones for larger sets. One-channel images count for
    every channel when ``channels`` is 3 (grey replicated), so all channels get the same values.

    Returns:
        tuple: ``(mean, std)``, ``channels`` floats each.

    Example:
        >>> channel_stats(train, 3)
        ((0.286, 0.286, 0.286), (0.353, 0.353, 0.353))
    """
    n = len(dataset)
    idx = torch.linspace(0, n - 1, min(n, limit)).round().long().unique() if n > limit else torch.arange(n)
    if isinstance(dataset, TensorImageDataset):
        batches = [dataset.images[idx]]
    else:
        batches = [torch.stack([dataset[int(i)][0] for i in idx[k:k + 256]]) for k in range(0, len(idx), 256)]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    count = 0
    for x in batches:
        x = x.to(torch.float64) / 255.0 if x.dtype == torch.uint8 else x.to(torch.float64)
        x = _match_channels(x, channels)
        total += x.sum(dim=(0, 2, 3))
        squares += x.pow(2).sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (squares / count - mean.pow(2)).clamp_min(1e-12).sqrt()
    return tuple(round(float(m), 4) for m in mean), tuple(round(max(float(s), 1e-3), 4) for s in std)


def _match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, channels, -1, -1)
    if x.shape[1] == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * weights).sum(1, keepdim=True)
    raise IntrospectError(
        f"images with {x.shape[1]} channels cannot feed a {channels}-channel model; use --input-size {x.shape[1]},H,W"
    )


class BatchTransform:
    """Turn a batch of images into model input: resize, channels, random crop and flip, normalize.

    ``uint8`` batches are scaled to ``[0, 1]``; images of another size are resized as
    :class:`introspect.images.Preprocess` does (shorter side to ``H``, center crop; bilinear); one
    channel is replicated for three-channel models. In training, the image is padded by ``pad``
    pixels on each side (by reflection) and a random ``H x W`` window of it is kept (the paper's random
    crops: 224 out of 256), then mirrored left-right with probability 1/2.

    Args:
        input_size (tuple[int, int, int]): ``(C, H, W)``.
        mean, std (sequence of float): per-channel normalization.
        pad (int): crop margin in pixels per side (default 0: no crops).
        flip (bool): random horizontal flips in training (default True).

    Example:
        >>> t = BatchTransform((3, 64, 64), (0.286,) * 3, (0.353,) * 3, pad=4)
        >>> t(torch.zeros(8, 1, 28, 28, dtype=torch.uint8), train=True).shape
        torch.Size([8, 3, 64, 64])
    """

    def __init__(self, input_size: Sequence[int], mean: Sequence[float], std: Sequence[float], pad: int = 0,
                 flip: bool = True) -> None:
        self.input_size = tuple(int(v) for v in input_size)
        c, h, w = self.input_size
        if pad < 0 or pad >= min(h, w):
            raise IntrospectError(
                f"the crop margin {pad} must be between 0 and {min(h, w) - 1} pixels; choose another --crop-pad"
            )
        self.mean = torch.tensor([float(m) for m in mean]).view(1, -1, 1, 1)
        self.std = torch.tensor([float(s) for s in std]).view(1, -1, 1, 1)
        if self.mean.numel() != c or self.std.numel() != c:
            raise IntrospectError(f"mean and std need {c} values each for {c} channels; fix the checkpoint or the data")
        self.pad = int(pad)
        self.flip = bool(flip)

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        _, h, w = self.input_size
        if tuple(x.shape[-2:]) == (h, w):
            return x
        ih, iw = x.shape[-2:]
        side = max(h, w)
        scale = side / min(ih, iw)
        if ih <= iw:
            nh, nw = side, int(side * iw / ih)
        else:
            nh, nw = int(side * ih / iw), side
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=scale < 1)
        top, left = int(round((nh - h) / 2.0)), int(round((nw - w) / 2.0))
        return x[..., top:top + h, left:left + w]

    def __call__(
        self, x: torch.Tensor, *, train: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Transform ``x`` (``N x C' x h x w``); random crops and flips only when ``train``."""
        x = x.to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x.to(torch.float32)
        x = self._resize(x)
        x = _match_channels(x, self.input_size[0])
        n, _, h, w = x.shape
        if train and self.pad:
            p = self.pad
            x = F.pad(x, (p, p, p, p), mode="reflect")
            dy = torch.randint(0, 2 * p + 1, (n,), generator=generator)
            dx = torch.randint(0, 2 * p + 1, (n,), generator=generator)
            rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
            cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
            x = x[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]
        if train and self.flip:
            mirror = torch.rand(n, generator=generator) < 0.5
            x = torch.where(mirror.view(-1, 1, 1, 1), x.flip(-1), x)
        return ((x - self.mean) / self.std).contiguous()


def _batches(dataset, order: torch.Tensor, batch_size: int, workers: int):
    """``(images, labels)`` mini-batches in ``order``."""
    if isinstance(dataset, TensorImageDataset):
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            yield dataset.images[idx], dataset.targets[idx]
        return
    chunks = [order[start:start + batch_size].tolist() for start in range(0, len(order), batch_size)]
    loader = DataLoader(dataset, batch_sampler=chunks, num_workers=workers, persistent_workers=False)
    for images, labels in loader:
        yield images, torch.as_tensor(labels, dtype=torch.long)


# --------------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """The recipe's settings (defaults: the paper's).

    Attributes:
        epochs (int): train until this epoch (1-based, total; default 10).
        batch_size (int): mini-batch size (128).
        lr (float): starting learning rate (1e-2).
        momentum (float): SGD momentum (0.9).
        weight_decay (float): L2 penalty (0: the paper names none).
        lr_steps (tuple[int, ...]): epochs after which the rate is multiplied by ``lr_gamma``.
        lr_gamma (float): the factor (0.1).
        plateau (bool): also lower the rate when the monitored loss (validation, else training)
            stops improving for more than ``patience`` epochs.
        patience (int): see ``plateau`` (2).
        filter_radius (float): filter RMS radius (0.1); 0 turns renormalization off.
        crop_pad (int): random-crop margin per side in pixels (the paper's 256 -> 224 crops are
            ``H // 14``; 0: no crops).
        flip (bool): random horizontal flips (True).
        seed (int): seeds the initialization, shuffling, crops, flips and dropout (0).
        workers (int): data-loading processes for image folders (0: in the main process).
        init_std (float): weights start from N(0, ``init_std``) (1e-2); the caller initializes
            (:func:`init_paper`), this records it.
        val_split (float): fraction of the training data the caller held out for validation (0);
            recorded.
        tie_channels (bool): the caller tied the first layer's input channels
            (:func:`tie_input_channels`, for grey data fed as RGB); recorded.
    """

    epochs: int = 10
    batch_size: int = PAPER_BATCH_SIZE
    lr: float = PAPER_LR
    momentum: float = PAPER_MOMENTUM
    weight_decay: float = 0.0
    lr_steps: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    plateau: bool = False
    patience: int = 2
    filter_radius: float = PAPER_FILTER_RADIUS
    crop_pad: int = 0
    flip: bool = True
    seed: int = 0
    workers: int = 0
    init_std: float = PAPER_INIT_STD
    val_split: float = 0.0
    tie_channels: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lr_steps"] = list(self.lr_steps)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "lr_steps" in known:
            known["lr_steps"] = tuple(int(s) for s in known["lr_steps"])
        return cls(**known)

    def check(self) -> None:
        """Raise :class:`IntrospectError` for settings that cannot train."""
        problems = [
            (self.epochs < 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size < 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (not self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (not 0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay < 0, f"--weight-decay must be >= 0, got {self.weight_decay}"),
            (self.filter_radius < 0, f"--filter-radius must be >= 0, got {self.filter_radius}"),
            (self.crop_pad < 0, f"--crop-pad must be >= 0, got {self.crop_pad}"),
            (self.workers < 0, f"--workers must be >= 0, got {self.workers}"),
            (any(s < 1 for s in self.lr_steps), f"--lr-steps are epochs (1 or more), got {list(self.lr_steps)}"),
        ]
        for bad, message in problems:
            if bad:
                raise IntrospectError(message + "; fix the option")


@dataclass
class TrainResult:
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
    device = next(model.parameters()).device
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
    progress: bool = False,
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
        progress (bool): show a progress bar per epoch on stderr (default False).
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
    device = next(model.parameters()).device
    transform = BatchTransform(input_size, mean, std, pad=config.crop_pad, flip=config.flip)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    schedule = LRSchedule(config.lr, steps=config.lr_steps, gamma=config.lr_gamma, plateau=config.plateau,
                          patience=config.patience)
    history: list[dict] = []
    start = 0
    if resume is not None:
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


def _summary(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"lr {row['lr']:.3g}", f"loss {row['train_loss']:.4f}",
             f"acc {row['train_acc']:.4f}"]
    for name in ("val", "test"):
        if f"{name}_acc" in row:
            parts.append(f"{name} loss {row[f'{name}_loss']:.4f} acc {row[f'{name}_acc']:.4f}")
    parts.append(f"{row['seconds']:.0f}s")
    return "  ".join(parts)


def _train_epoch(
    model, train_set, optimizer, schedule, transform, config: TrainConfig, epoch: int, progress: bool
) -> dict:
    import click

    began = time.perf_counter()
    for group in optimizer.param_groups:
        group["lr"] = schedule.lr
    seed = _epoch_seed(config.seed, epoch)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed + 1)  # dropout masks (all devices); the caller forked the RNG state
    order = torch.randperm(len(train_set), generator=generator)
    device = next(model.parameters()).device
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, renormalized = 0, 0
    steps = math.ceil(len(order) / config.batch_size)
    batches = _batches(train_set, order, config.batch_size, config.workers)
    bar = click.progressbar(length=steps, label=f"epoch {epoch}/{config.epochs}", file=sys.stderr,
                            show_pos=True, show_eta=True) if progress else None
    try:
        for images, labels in batches:
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
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.render_finish()
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


__all__ = [
    "PAPER_LR", "PAPER_MOMENTUM", "PAPER_BATCH_SIZE", "PAPER_INIT_STD", "PAPER_FILTER_RADIUS", "IDX_FILES",
    "renormalize_filters", "init_paper", "tie_input_channels", "LRSchedule", "TensorImageDataset",
    "is_idx_folder", "fashion_mnist", "image_folder", "split", "channel_stats", "BatchTransform", "TrainConfig",
    "TrainResult", "evaluate", "filter_grid", "train_model", "read_training_checkpoint"
]
