"""The report's inputs: the data set with a name per image, bad files found up front, layers chosen."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from introspect import layer_table
from introspect.plugin import IntrospectError, meta_of


@dataclass
class Data:
    """The images of a report.

    Attributes:
        dataset: map-style data set (image tensors or ``(image, label)`` pairs) of the used images.
        names (list[str]): a display name per image (the path relative to the folder).
        files (list[Path] | None): the image files, when the data set is a folder.
        skipped (list[str]): files that could not be read and were left out (``skip_bad``).
        labels (list[str | None]): the true class of each image when the folder says it.
    """

    dataset: object
    names: list[str]
    files: list[Path] | None = None
    skipped: list[str] = field(default_factory=list)
    labels: list[str | None] = field(default_factory=list)

    def image(self, index: int) -> torch.Tensor:
        item = self.dataset[index]
        return item[0] if isinstance(item, (list, tuple)) else item

    def __len__(self) -> int:
        return len(self.names)


class _Subset(torch.utils.data.Dataset):
    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.dataset[self.indices[i]]


def _labels_file(root: Path) -> dict:
    """``labels.json`` beside flat images (the bundled images have one): file name -> class name."""
    import json

    try:
        doc = json.loads((root / "labels.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def open_data(dataset, model: nn.Module, *, limit: int | None = None, skip_bad: bool = False,
              progress=None) -> Data:
    """``dataset`` (a folder, an ``ImageFolderDataset``-like object with ``paths``, a map-style data set
    or an ``(N, C, H, W)`` tensor) as :class:`Data`; every file of a folder is read once to find bad
    ones (an error naming the first, or with ``skip_bad`` a list of them)."""
    from introspect.plugin import ImageFolderDataset, Preprocess, read_image

    if isinstance(dataset, (str, os.PathLike)):
        dataset = ImageFolderDataset(dataset, Preprocess.from_meta(meta_of(model)))
    if isinstance(dataset, torch.Tensor):
        if dataset.dim() != 4 or dataset.shape[0] == 0:
            raise IntrospectError(f"a data set given as a tensor must be N x C x H x W with N >= 1, "
                                  f"got shape {tuple(dataset.shape)}")
        n = dataset.shape[0] if limit is None else min(limit, dataset.shape[0])
        names = [f"image {i}" for i in range(n)]
        return Data(dataset[:n], names, labels=[None] * n)
    try:
        total = len(dataset)
    except TypeError:
        raise IntrospectError("the data set has no length; pass a folder of images or a map-style data set") from None
    if total == 0:
        raise IntrospectError("the data set is empty; add images")
    n = total if limit is None else min(limit, total)
    paths = getattr(dataset, "paths", None)
    if paths is None:
        return Data(_Subset(dataset, range(n)), [f"image {i}" for i in range(n)], labels=[None] * n)
    root = Path(getattr(dataset, "root", os.path.commonpath([str(p) for p in paths[:n]]) or "."))
    good, skipped = [], []
    for i in range(n):
        try:
            read_image(paths[i])
            good.append(i)
        except IntrospectError as exc:
            if not skip_bad:
                raise IntrospectError(f"{exc}; fix or remove the file, or pass --skip-bad to leave it out") from None
            skipped.append(_relative(Path(paths[i]), root))
        if progress is not None:
            progress("check", i + 1, n)
    if not good:
        raise IntrospectError(f"no readable images in {root}; every one of the {n} files failed to load")
    classes = getattr(dataset, "classes", None) or []
    targets = getattr(dataset, "targets", None)
    named = _labels_file(root)
    labels = []
    for i in good:
        t = targets[i] if targets is not None else -1
        labels.append(classes[t] if 0 <= t < len(classes) else named.get(Path(paths[i]).name))
    files = [Path(paths[i]) for i in good]
    return Data(_Subset(dataset, good), [_relative(p, root) for p in files], files, skipped, labels)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def default_layers(model: nn.Module) -> list[str]:
    """The layers a report shows by default: the paper's ``conv1..convN`` when the model has those
    aliases; the stages ``layer1..layerN`` of a ResNet-like model; otherwise the last convolution
    before each change of resolution (each "stage")."""
    names = dict(model.named_modules())
    convs = [n for n, m in names.items() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise IntrospectError("the model has no Conv2d layer; pass --layers to choose layers")
    rows = layer_table(model, meta_of(model).input_size)
    aliased = [r.name for r in rows if r.alias and re.fullmatch(r"conv\d+", r.alias) and r.type == "Conv2d"]
    if aliased:
        return aliased
    stages = sorted((n for n in names if re.fullmatch(r"layer\d+", n)), key=lambda s: int(s[5:]))
    if stages:
        return stages
    shapes = {r.name: r.output_shape for r in rows}
    chosen, last_hw = [], None
    for name in convs:
        shape = shapes.get(name)
        if shape is None or len(shape) != 3:
            continue
        if chosen and shape[1:] == last_hw:
            chosen[-1] = name
        else:
            chosen.append(name)
        last_hw = shape[1:]
    return chosen or convs[-1:]


def stem(name: str) -> str:
    """A layer name made safe for file names (``layer4.1.conv2`` stays, ``a/b`` becomes ``a_b``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "layer"


__all__ = ["Data", "default_layers", "open_data", "stem"]
