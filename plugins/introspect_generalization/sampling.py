"""Labels of a data set and the per-class training samples of the paper's Sec. 5.2 protocol.

Zeiler & Fergus train the new classifier on a fixed number of images per class (15 or 30 on
Caltech-101, 15..60 on Caltech-256) drawn at random, and test on other images of the same classes,
averaging over several random splits. :func:`per_class_splits` draws those samples: for each repeat
one random order of every class; the first ``n`` images of that order are the ``n``-per-class
training set, so the smaller training sets are subsets of the larger ones, and (without a separate
test set) the test set of a repeat is every image outside the largest training set, the same for
every ``n``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from introspect.plugin import IntrospectError


@dataclass
class Split:
    """The images of one repeat.

    Attributes:
        order (dict[int, Tensor]): class (``0..K-1``) -> indices (int64) of that class's training
            images in random order; the ``n``-per-class training set is the first ``n`` of each.
        test (Tensor | None): int64 indices of the test images (into the training data set when it
            is split; ``None`` when a separate test set is used whole).
    """

    order: dict[int, torch.Tensor]
    test: torch.Tensor | None

    def train(self, n: int) -> torch.Tensor:
        """The sorted indices of the ``n``-per-class training set."""
        return torch.cat([idx[:n] for idx in self.order.values()]).sort().values


def is_pair(data) -> bool:
    """Whether ``data`` is a pair ``(images, labels)`` of tensors (not a data set of ``(image, label)``)."""
    return isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor)


def dataset_labels(data, what: str = "data set") -> list[int]:
    """The label of every example of ``data``, without loading images when the data set lists them.

    Args:
        data: a pair ``(images, labels)`` of tensors, a map-style data set with a ``targets``
            attribute (``ImageFolderDataset``, torchvision data sets), or any map-style data set of
            ``(image, label)`` pairs (read once for the labels).
        what (str): how errors name the data set.

    Returns:
        list[int]: one integer label per example.
    """
    if is_pair(data):
        images, labels = data
        labels = torch.as_tensor(labels)
        if images.dim() < 2 or labels.dim() != 1 or len(labels) != len(images):
            raise IntrospectError(f"{what}: give (images N x C x H x W, labels N), got shapes "
                                  f"{tuple(images.shape)} and {tuple(labels.shape)}")
        return [int(v) for v in labels.tolist()]
    if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
        raise IntrospectError(f"{what} must be a map-style data set of (image, label) or a pair "
                              f"(images, labels), got {type(data).__name__}")
    targets = getattr(data, "targets", None)
    if targets is not None and len(targets) == len(data):
        labels = [int(t) for t in (targets.tolist() if hasattr(targets, "tolist") else targets)]
    else:
        labels = [int(data[i][1]) for i in range(len(data))]
    if any(t < 0 for t in labels):
        raise IntrospectError(f"{what} has unlabelled images (label -1: a flat folder?); "
                              "give a folder with one subfolder per class")
    return labels


def class_index(labels: Sequence[int], what: str = "data set") -> tuple[list[int], torch.Tensor]:
    """The sorted distinct labels and every label mapped to ``0..K-1``; at least two classes."""
    values = sorted(set(int(v) for v in labels))
    if len(values) < 2:
        raise IntrospectError(f"{what} has {len(values)} class; a classifier needs at least 2 classes "
                              "(one subfolder per class)")
    lookup = {v: i for i, v in enumerate(values)}
    return values, torch.tensor([lookup[int(v)] for v in labels], dtype=torch.long)


def check_per_class(per_class) -> list[int]:
    """``per_class`` (an int or a sequence of ints) as a sorted list of distinct positive ints."""
    values = [per_class] if isinstance(per_class, int) else list(per_class or [])
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        raise IntrospectError(f"per_class must be positive integers (training images per class), got "
                              f"{per_class!r}; e.g. per_class=(5, 10, 30)")
    return sorted(set(values))


def per_class_splits(classes: torch.Tensor, per_class: Sequence[int], repeats: int = 1, seed: int = 0,
                     hold_out: bool = True, class_names: Sequence[str] | None = None) -> list[Split]:
    """Random per-class training samples (and, with ``hold_out``, the test images), one per repeat.

    Args:
        classes (Tensor): ``N`` int64 class indices ``0..K-1`` of the training data set.
        per_class (sequence of int): training images per class of each setting; the largest must
            leave at least one test image in every class when ``hold_out`` (at most all of them
            otherwise).
        repeats (int): random splits (default 1).
        seed (int): seed of the random orders; the same seed gives the same splits (default 0).
        hold_out (bool): the test set is the rest of the data set (default True; False when a
            separate test set is given).
        class_names (sequence of str | None): names for error messages.

    Returns:
        list[Split]: ``repeats`` splits.

    Raises:
        IntrospectError: a class has too few images for the largest ``per_class``.

    Example:
        >>> s = per_class_splits(torch.tensor([0, 0, 0, 1, 1, 1]), [2], seed=0)[0]
        >>> len(s.train(2)), len(s.test)
        (4, 2)
    """
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise IntrospectError(f"repeats must be a positive integer, got {repeats!r}; e.g. repeats=5")
    largest = max(per_class)
    k = int(classes.max()) + 1
    members = [torch.nonzero(classes == c).flatten() for c in range(k)]
    need = largest + 1 if hold_out else largest
    for c, idx in enumerate(members):
        if len(idx) < need:
            name = class_names[c] if class_names else str(c)
            rest = " and keep one for testing" if hold_out else ""
            raise IntrospectError(f"class {name!r} has {len(idx)} images, too few to train on {largest} per "
                                  f"class{rest}; use a smaller --per-class or add images")
    gen = torch.Generator().manual_seed(int(seed))
    splits = []
    for _ in range(repeats):
        order = {c: idx[torch.randperm(len(idx), generator=gen)] for c, idx in enumerate(members)}
        test = torch.cat([o[largest:] for o in order.values()]).sort().values if hold_out else None
        splits.append(Split(order, test))
    return splits


__all__ = ["Split", "is_pair", "dataset_labels", "class_index", "check_per_class", "per_class_splits"]
