"""``feature_generalization(model, dataset, *, ...)``: linear classifiers on each layer's features.

Zeiler & Fergus (Sec. 5.1-5.2, Tables 4-7) keep the layers of their ImageNet-trained model fixed and
train a new softmax classifier on top, with only a few training images per class of a new data set
(Caltech-101, Caltech-256, PASCAL 2012); Table 7 trains a linear SVM or a softmax on the features of
each layer 1..7 in turn and shows that the features become more discriminative with depth. This
function does that for any model and any labelled data set, over several training-set sizes and
random splits.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from introspect.plugin import IntrospectError, Progress, Shown, model_device, notebook_progress, shape_text, short_list
from introspect_generalization.features import MAX_DIM, extract, resolve_layers, standardize
from introspect_generalization.probes import check_classifiers, fit, row_space
from introspect_generalization.sampling import Split, check_per_class, class_index, dataset_labels, per_class_splits

#: The paper's Caltech-101 training-set sizes (images per class).
PAPER_PER_CLASS = (15, 30)


# --------------------------------------------------------------------------------------------------
# the result
# --------------------------------------------------------------------------------------------------
@dataclass(repr=False)
class GeneralizationResult(Shown):
    """Test accuracy of linear classifiers on the fixed features of each layer (the paper's Table 7).

    Attributes:
        layers (list[str]): canonical names of the probed layers (``pixels``: the input itself).
        aliases (list[str | None]): the paper's name of each layer (``conv1``), where it has one.
        shapes (list[tuple]): the output shape of one image at each layer.
        pools (list[int | None]): side of the adaptive average pooling applied to each map.
        feature_dims (list[int]): length of each layer's feature vector.
        classifiers (list[str]): ``softmax`` and/or ``svm``.
        per_class (list[int]): training images per class of each setting.
        accuracy (Tensor): ``L x C x P`` fraction of test images classified correctly, mean over repeats
            (layers x classifiers x per-class settings); ``accuracy_std`` the standard deviation over
            repeats (0 for one repeat).
        accuracies (Tensor): ``R x L x C x P`` accuracy of every repeat.
        class_accuracy (Tensor): ``L x C x P`` mean over classes of the per-class accuracy (Caltech's
            measure), mean over repeats.
        iterations (Tensor): ``R x L x C x P`` L-BFGS iterations of every fit.
        classes (list[str]): class names (or labels) of the new data set, in class-index order.
        train_sizes (list[int]): training images of each setting (``per_class * K``).
        test_sizes (list[int]): test images of each repeat.
        train_index (list[list[Tensor]]): per repeat and setting, the indices (into the training
            data set) of the training images; ``test_index`` per repeat the test images (into the
            training data set when it was split, else ``None``: the whole test set).
        repeats, seed (int): random splits and their seed.
        options (dict): ``C``, ``max_iter``, ``rectify``, ``pool``, ``max_dim``, ``batch_size``.
        stats (dict): seconds for the features and the fits, device.
    """

    layers: list[str]
    aliases: list[str | None]
    shapes: list[tuple]
    pools: list[int | None]
    feature_dims: list[int]
    classifiers: list[str]
    per_class: list[int]
    accuracy: torch.Tensor
    accuracy_std: torch.Tensor
    accuracies: torch.Tensor
    class_accuracy: torch.Tensor
    iterations: torch.Tensor
    classes: list[str]
    train_sizes: list[int]
    test_sizes: list[int]
    train_index: list[list[torch.Tensor]] = field(default_factory=list)
    test_index: list[torch.Tensor | None] = field(default_factory=list)
    repeats: int = 1
    seed: int = 0
    options: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)

    def layer_title(self, i: int) -> str:
        """Layer ``i`` as people call it: its alias (``conv5``) when it has one, else its module name."""
        return self.aliases[i] or self.layers[i]

    @property
    def chance(self) -> float:
        """The accuracy of guessing: ``1 / K``."""
        return 1.0 / len(self.classes)

    def _repr_lines(self) -> list[str]:
        best = self.best()
        return [f"GeneralizationResult: {short_list(self.classifiers)} on {len(self.layers)} layers "
                f"({short_list([self.layer_title(i) for i in range(len(self.layers))], 5)}), "
                f"{len(self.classes)} classes, {short_list(self.per_class)} training images per class, "
                f"{self.repeats} repeat{'s' if self.repeats != 1 else ''}",
                f"  best: {best['layer']} {best['classifier']} at {best['per_class']} per class, "
                f"accuracy {best['accuracy']:.3f} (chance {self.chance:.3f})",
                f"  accuracy {shape_text(self.accuracy)} (layers x classifiers x settings)"]

    def _figures(self) -> dict:
        from introspect_generalization.figure import accuracy_plot, figure, table_picture

        return {"figure": lambda: figure(accuracy_plot(self), table_picture(self)),
                "accuracy": lambda: accuracy_plot(self), "table": lambda: table_picture(self)}

    def best(self) -> dict:
        """The layer, classifier and setting with the highest mean accuracy."""
        flat = int(self.accuracy.argmax())
        l, rest = divmod(flat, self.accuracy.shape[1] * self.accuracy.shape[2])
        c, p = divmod(rest, self.accuracy.shape[2])
        return {"layer": self.layer_title(l), "classifier": self.classifiers[c], "per_class": self.per_class[p],
                "accuracy": float(self.accuracy[l, c, p])}

    def to_dict(self) -> dict:
        """A JSON-ready summary: every accuracy with its layer, classifier and setting."""
        rows = []
        for l in range(len(self.layers)):
            for c, kind in enumerate(self.classifiers):
                for p, n in enumerate(self.per_class):
                    rows.append({"layer": self.layers[l], "alias": self.aliases[l], "classifier": kind,
                                 "per_class": n, "accuracy": float(self.accuracy[l, c, p]),
                                 "std": float(self.accuracy_std[l, c, p]),
                                 "class_accuracy": float(self.class_accuracy[l, c, p]),
                                 "repeats": self.accuracies[:, l, c, p].tolist()})
        return {
            "method": "feature_generalization",
            "layers": [{"name": n, "alias": a, "shape": list(s), "pool": pl, "feature_dim": d}
                       for n, a, s, pl, d in zip(self.layers, self.aliases, self.shapes, self.pools,
                                                 self.feature_dims)],
            "classifiers": self.classifiers, "per_class": self.per_class,
            "classes": self.classes, "chance": self.chance,
            "train_sizes": self.train_sizes, "test_sizes": self.test_sizes,
            "repeats": self.repeats, "seed": self.seed, "options": self.options,
            "accuracy": rows, "best": self.best(), "stats": self.stats,
        }

    def save(self, out) -> list:
        """Write the table and the accuracies into folder ``out``; nothing is written on error.

        Files: ``table.md`` (the Table 7 layout), ``accuracy.csv`` (one row per layer, classifier and
        setting), ``accuracy.npy`` (``L x C x P``), ``accuracy_std.npy``, ``accuracies.npy``
        (``R x L x C x P``), ``splits.json`` (the training and test indices), ``result.json``,
        ``accuracy.png`` (accuracy against layer), ``table.png`` and ``figure.png`` (both).

        Returns:
            list[Path]: the files written.
        """
        from introspect.plugin import OutputDir
        from introspect_generalization.figure import accuracy_plot, csv_text, figure, markdown_table, table_picture

        with OutputDir(out) as od:
            od.save_text("table.md", markdown_table(self) + "\n")
            od.save_text("accuracy.csv", csv_text(self))
            od.save_npy("accuracy.npy", self.accuracy)
            od.save_npy("accuracy_std.npy", self.accuracy_std)
            od.save_npy("accuracies.npy", self.accuracies)
            od.save_json("splits.json", self.splits())
            od.save_json("result.json", self.to_dict())
            plot, table = accuracy_plot(self), table_picture(self)
            od.save_png("accuracy.png", plot)
            od.save_png("table.png", table)
            od.save_png("figure.png", figure(plot, table))
        return od.files

    def splits(self) -> list[dict]:
        """Per repeat: the training indices of each setting and the test indices (``None``: all)."""
        return [{"train": {str(n): idx.tolist() for n, idx in zip(self.per_class, train)},
                 "test": None if test is None else test.tolist()}
                for train, test in zip(self.train_index, self.test_index)]


# --------------------------------------------------------------------------------------------------
# the method
# --------------------------------------------------------------------------------------------------
@notebook_progress
def feature_generalization(
    model: nn.Module,
    dataset,
    *,
    test_dataset=None,
    layers: str | nn.Module | Sequence[str | nn.Module] | None = None,
    per_class: int | Sequence[int] = PAPER_PER_CLASS,
    classifiers: str | Sequence[str] = ("softmax", "svm"),
    repeats: int = 1,
    seed: int = 0,
    batch_size: int = 64,
    C: float = 1.0,
    max_iter: int = 500,
    rectify: bool = True,
    pool: int | None = None,
    max_dim: int = MAX_DIM,
    pixels: bool = False,
    class_names: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> GeneralizationResult:
    """Train linear classifiers on the fixed features of each layer of ``model`` (Table 7).

    The features of every needed image are computed once (the model frozen: eval mode, no
    gradients, weights untouched), flattened and standardized with the mean and standard deviation
    of each training set. For each repeat, each training-set size and each layer, a softmax and/or a
    linear SVM (see :mod:`introspect_generalization.probes`) is trained and tested.

    Args:
        model (nn.Module): the trained model (not modified; its train/eval flags are restored).
        dataset: the new data set: a map-style data set of ``(image, label)`` with images as
            ``C x H x W`` tensors preprocessed for the model (e.g. ``ImageFolderDataset(root,
            Preprocess.from_meta(meta_of(model)))``), or a pair ``(images N x C x H x W, labels N)``.
        test_dataset: a data set of the same kind with the same classes (matched by name when both
            data sets have a ``classes`` list, so a test folder may hold fewer), or ``None``
            (default): then each class of ``dataset`` is split, ``per_class`` random images for training and, as
            test set, every image outside the largest training set (the same test images for every
            ``per_class`` setting of a repeat; smaller training sets are subsets of larger ones).
            With a test set, the training images are drawn from ``dataset`` and all of
            ``test_dataset`` is tested.
        layers (str | nn.Module | sequence | None): a layer or several, by name, alias or module. Default: the
            paper's layers 1..7 (``conv1``..``conv5``, ``fc6``, ``fc7``) on the bundled/ZFNet/AlexNet
            models; for other models every ``Conv2d``/``Linear`` except the output layer.
        per_class (int or sequence of int): training images per class; one setting each (default
            ``(15, 30)``, the paper's Caltech-101 sizes).
        classifiers (str or sequence of str): ``"softmax"`` and/or ``"svm"`` (default both).
        repeats (int): random training sets per setting (default 1); the accuracy is their mean.
        seed (int): seed of the random training sets (default 0).
        batch_size (int): images per forward pass (default 64).
        C (float): inverse L2 regularization strength of both classifiers, as in sklearn's
            ``LogisticRegression``/``LinearSVC`` (default 1.0; the objectives are in the probes
            module); the bias is not penalized.
        max_iter (int): most L-BFGS iterations per fit (default 500).
        rectify (bool): take ``max(0, x)`` of each layer's output (default True: the paper's Caffe
            features are read after the in-place ReLU that follows conv1..fc7).
        pool (int | None): adaptive average pooling of convolutional maps to ``pool x pool`` before
            flattening. Default ``None``: a map is kept whole unless it has more than ``max_dim``
            values, then it is pooled to the largest square that fits.
        max_dim (int): the size cap of the default pooling (default 16384).
        pixels (bool): also probe the input pixels themselves, a baseline row ``pixels`` first
            (default False).
        class_names (sequence of str | None): names of the classes (sorted labels); default the
            data set's ``classes`` attribute, else the labels.
        progress (callable | None): called as ``progress(stage, done, total)`` with stage
            ``"features"`` (images) or ``"classifiers"`` (fits).

    Returns:
        GeneralizationResult: the accuracies (``L x C x P``), splits and feature sizes.

    Raises:
        IntrospectError: unknown layer or classifier, fewer than two classes, a class with too few
            images for ``per_class``, test classes missing from the training set.

    Example:
        >>> model = introspect.load_model(None)
        >>> data = ImageFolderDataset("digits/", Preprocess.from_meta(meta_of(model)))
        >>> result = introspect.feature_generalization(model, data, per_class=(5, 10))
        >>> result.accuracy.shape          # 7 layers x 2 classifiers x 2 settings
        torch.Size([7, 2, 2])
    """
    specs = resolve_layers(model, layers, pixels)
    kinds = check_classifiers(classifiers)
    sizes = check_per_class(per_class)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise IntrospectError(f"batch_size must be a positive integer, got {batch_size!r}; e.g. 64")
    labels, classes = class_index(dataset_labels(dataset, "the training set"), "the training set")
    names = _class_names(class_names, getattr(dataset, "classes", None), labels)
    splits = per_class_splits(classes, sizes, repeats, seed, hold_out=test_dataset is None, class_names=names)
    test_classes = None if test_dataset is None else _test_classes(test_dataset, labels, names,
                                                               getattr(dataset, "classes", None))

    needed = _needed(splits, max(sizes))
    n_test = 0 if test_dataset is None else len(test_classes)
    report = _stage(progress, "features", len(needed) + n_test)
    t0 = time.perf_counter()
    opts = dict(batch_size=batch_size, rectify=rectify, pool=pool, max_dim=max_dim)
    feats = extract(model, dataset, needed, specs, progress=report, **opts)
    test_feats = None if test_dataset is None else extract(model, test_dataset, torch.arange(n_test), specs,
                                                       progress=report, **opts)
    t1 = time.perf_counter()
    row = torch.full((len(classes),), -1, dtype=torch.long)
    row[needed] = torch.arange(len(needed))

    shape = (repeats, len(specs), len(kinds), len(sizes))
    acc, cls_acc, iters = torch.zeros(shape), torch.zeros(shape), torch.zeros(shape, dtype=torch.long)
    device = model_device(model)
    report = _stage(progress, "classifiers", acc.numel())
    for r, split in enumerate(splits):
        for l in range(len(specs)):
            if test_feats is None:
                x_test, y_test = feats[l][row[split.test]], classes[split.test]
            else:
                x_test, y_test = test_feats[l], test_classes
            for p, n in enumerate(sizes):
                train = split.train(n)
                xs, xt = standardize(feats[l][row[train]].to(device), x_test.to(device))
                span = row_space(xs) if xs.shape[1] > xs.shape[0] else None
                for c, kind in enumerate(kinds):
                    probe = fit(kind, xs, classes[train], len(labels), C=C, max_iter=max_iter, span=span)
                    acc[r, l, c, p], cls_acc[r, l, c, p] = _score(probe.predict(xt).cpu(), y_test, len(labels))
                    iters[r, l, c, p] = probe.iterations
                    report(1)
    t2 = time.perf_counter()
    return GeneralizationResult(
        layers=[s.name for s in specs], aliases=[s.alias for s in specs], shapes=[s.shape for s in specs],
        pools=[s.pool for s in specs], feature_dims=[s.dim for s in specs], classifiers=kinds, per_class=sizes,
        accuracy=acc.mean(0), accuracy_std=acc.std(0, unbiased=False), accuracies=acc,
        class_accuracy=cls_acc.mean(0), iterations=iters, classes=names,
        train_sizes=[n * len(labels) for n in sizes],
        test_sizes=[n_test if s.test is None else len(s.test) for s in splits],
        train_index=[[s.train(n) for n in sizes] for s in splits], test_index=[s.test for s in splits],
        repeats=repeats, seed=seed, options={"C": C, "max_iter": max_iter, **opts},
        stats={"features_seconds": round(t1 - t0, 3), "fit_seconds": round(t2 - t1, 3), "device": str(device),
               "images_embedded": len(needed) + n_test,
               "fits_at_max_iter": int((iters >= max_iter).sum()), "fits": int(iters.numel())},
    )


def _class_names(given, from_data, labels: list[int]) -> list[str]:
    if given is not None:
        if len(given) != len(labels):
            raise IntrospectError(f"class_names has {len(given)} names for {len(labels)} classes; "
                                  "give one name per class")
        return [str(n) for n in given]
    if from_data and len(from_data) > max(labels):
        return [str(from_data[v]) for v in labels]
    return [str(v) for v in labels]


def _by_name(test_labels: list[int], test_names, train_names) -> list[int]:
    """Test labels as indices of the training set's classes of the same names (folders of other classes)."""
    missing = sorted({str(test_names[t]) for t in test_labels} - {str(n) for n in train_names})
    if missing:
        raise IntrospectError(f"the test set has class(es) {', '.join(map(repr, missing[:3]))} that the training "
                              "set lacks; give both sets the same classes (class subfolders)")
    index = {str(n): i for i, n in enumerate(train_names)}
    return [index[str(test_names[t])] for t in test_labels]


def _test_classes(test_set, labels: list[int], names: list[str], train_names=None) -> torch.Tensor:
    test_labels = dataset_labels(test_set, "the test set")
    test_names = getattr(test_set, "classes", None)
    if (train_names and test_names and list(map(str, test_names)) != list(map(str, train_names))
            and max(test_labels, default=-1) < len(test_names)):
        test_labels = _by_name(test_labels, test_names, train_names)
    lookup = {v: i for i, v in enumerate(labels)}
    unknown = sorted(set(test_labels) - set(lookup))
    if unknown:
        raise IntrospectError(f"the test set has label(s) {unknown[:5]} that the training set lacks; "
                              f"give both sets the same classes ({', '.join(names[:5])}...)")
    if not test_labels:
        raise IntrospectError("the test set is empty; give a test set with images")
    return torch.tensor([lookup[v] for v in test_labels], dtype=torch.long)


def _needed(splits: list[Split], largest: int) -> torch.Tensor:
    """Sorted indices of every training-set image some split uses (for training or testing)."""
    parts = [s.train(largest) for s in splits] + [s.test for s in splits if s.test is not None]
    return torch.unique(torch.cat(parts))


def _score(pred: torch.Tensor, y: torch.Tensor, k: int) -> tuple[float, float]:
    """Accuracy and the mean over classes present of the per-class accuracy."""
    right = (pred == y).double()
    count = torch.bincount(y, minlength=k).double()
    hits = torch.bincount(y, weights=right, minlength=k)
    present = count > 0
    return float(right.mean()), float((hits[present] / count[present]).mean())


def _stage(progress, stage: str, total: int) -> Callable[[int], None]:
    done = 0

    def report(step: int) -> None:
        nonlocal done
        done += step
        if progress is not None:
            progress(stage, done, total)

    return report


__all__ = ["feature_generalization", "GeneralizationResult", "PAPER_PER_CLASS"]
