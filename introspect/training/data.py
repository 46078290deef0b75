"""Training data: data sets, splits, statistics and the augmentation of the paper's recipe.

Data sets are anything that yields ``(image, label)`` with ``image`` a ``C x h x w`` tensor (``uint8``
or float in ``[0, 1]``): :class:`TensorImageDataset` (in memory; :func:`fashion_mnist` reads the
Fashion-MNIST IDX files through ``torchvision.datasets.FashionMNIST``) or :func:`image_folder`
(one subfolder per class); :func:`load_data` picks one for a folder. Training images are augmented with
random crops and horizontal flips (:class:`BatchTransform`).
"""
from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from introspect.errors import IntrospectError

#: The four Fashion-MNIST (and MNIST) IDX files, as torchvision's ``FashionMNIST`` names them.
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


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



def load_data(data: str | os.PathLike, input_size: Sequence[int], cache: str | os.PathLike):
    """The training data in folder ``data``: ``(train, test or None, kind)``.

    A folder of Fashion-MNIST IDX files gives its training and test sets (``kind``
    ``"fashion-mnist"``, copied into ``cache`` for torchvision); any other folder is an image folder
    with one subfolder per class, read at ``input_size`` (``kind`` ``"image-folder"``, no test set).

    Raises:
        IntrospectError: ``data`` is missing, a file, or holds no classes.
    """
    data = Path(data)
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


__all__ = [
    "IDX_FILES", "TensorImageDataset", "is_idx_folder", "fashion_mnist", "image_folder", "split", "load_data",
    "channel_stats", "BatchTransform",
]
