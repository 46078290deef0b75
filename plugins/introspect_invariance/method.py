"""``invariance(model, images, ...)``: how features and the output change under a transformation (Fig. 5).

Zeiler & Fergus (Sec. 4.4, Fig. 5) translate, scale and rotate 5 images and plot, against the amount
of transformation, the Euclidean distance between the feature vectors of the original and the
transformed image at layer 1 and layer 7, and the probability of each image's true class. Small
transformations change the first layer a lot and the top layers little; the output is stable to
translation and scaling but not to rotation (except for objects with rotational symmetry).

Here a layer's feature vector is its output flattened per image, and the distance is the Euclidean
norm of its difference to the untransformed image's vector. All transformed versions of all images
are run in batches, under ``torch.no_grad()`` and in eval mode.
"""
from __future__ import annotations

import numbers
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from introspect.plugin import (
    FILLS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    IntrospectError,
    ModelMeta,
    Progress,
    Shown,
    alias_of,
    attach,
    conv_layers,
    drawn_once,
    eval_mode,
    image_batch,
    meta_of,
    notebook_progress,
    report_progress,
    resolve_layer,
    resolve_target,
    shape_text,
    short_list,
    to_model,
)
from introspect_invariance.transforms import (
    IDENTITY,
    UNITS,
    check_transform,
    default_values,
    is_identity,
    transform_images,
)

#: The paper's layers: layer 1 and layer 7, by their aliases on ZFNet-shaped models.
PAPER_LAYERS = ("conv1", "fc7")


# --------------------------------------------------------------------------------------------------
# the result
# --------------------------------------------------------------------------------------------------
@dataclass(repr=False)
class InvarianceResult(Shown):
    """What one invariance sweep measured (Fig. 5), as tensors on the CPU.

    Attributes:
        transform (str): ``translate``, ``scale`` or ``rotate``; ``fill`` what uncovered pixels hold.
        values (Tensor): ``V`` (float64) transformation parameters (pixels, factor or degrees).
        layers (list[str]): the ``L`` layers read out (module names); ``aliases`` the paper's names.
        distance (Tensor): ``N x V x L`` (float64) Euclidean distance between the feature vector of
            each transformed image and that of the untransformed image, per layer.
        norm (Tensor): ``N x L`` (float64) norm of the untransformed image's feature vector (to
            compare layers of different sizes: ``distance / norm[:, None]``).
        prob (Tensor): ``N x V`` probability of each image's target class.
        label (Tensor): ``N x V`` (int64) most probable class; ``label_prob`` its probability.
        targets (list[int]): the target class of each image; ``target_names`` their names;
            ``targets_given`` whether the caller gave them (the true classes) or they are the top
            classes of the untransformed images.
        clean_prob (Tensor): ``N`` probability of the target for the untransformed image.
        input (Tensor): ``N x C x H x W`` the untransformed inputs.
        names (list[str]): a name per image (file stems in the CLI).
        classes (list[str] | None): class names of the model, if it has them.
        mean, std (tuple[float, ...]): the input normalization (to show the images).
        stats (dict): passes run, batch size, seconds, device.
    """

    transform: str
    values: torch.Tensor
    layers: list[str]
    distance: torch.Tensor
    norm: torch.Tensor
    prob: torch.Tensor
    label: torch.Tensor
    label_prob: torch.Tensor
    targets: list[int]
    target_names: list[str]
    clean_prob: torch.Tensor
    input: torch.Tensor
    fill: str = "mean"
    targets_given: bool = False
    aliases: list[str | None] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    classes: list[str] | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    stats: dict = field(default_factory=dict)

    def class_name(self, index: int) -> str:
        """The name of class ``index`` (its number when the model has no names)."""
        return ModelMeta(classes=self.classes).class_name(index)

    def layer_title(self, i: int) -> str:
        """Layer ``i`` as people call it: its alias (``fc7``) when it has one, else its module name."""
        alias = self.aliases[i] if i < len(self.aliases) else None
        return alias or self.layers[i]

    def image_name(self, n: int) -> str:
        """The name of image ``n`` (``image n`` when none was given)."""
        return self.names[n] if n < len(self.names) else f"image {n}"

    @property
    def unit(self) -> str:
        """The unit of the values: ``pixels``, ``factor`` or ``degrees``."""
        return UNITS[self.transform]

    def _away(self) -> torch.Tensor:
        """How far each value is from the identity: pixels, |log factor|, degrees to the nearest full turn."""
        v = self.values
        if self.transform == "translate":
            return v.abs()
        if self.transform == "scale":
            return v.log().abs()
        turn = v.remainder(360.0)
        return torch.minimum(turn, 360.0 - turn)

    @property
    def farthest(self) -> int:
        """Index of the value farthest from the identity (largest shift, zoom or turn towards 180°)."""
        return int(self._away().argmax())

    @property
    def nearest(self) -> int:
        """Index of the smallest transformation that is not the identity (the farthest if all are)."""
        away = self._away()
        if not bool((away > 0).any()):
            return self.farthest
        return int(torch.where(away > 0, away, torch.inf).argmin())

    @property
    def relative_distance(self) -> torch.Tensor:
        """``N x V x L`` distance divided by the norm of the untransformed feature vector."""
        return self.distance / self.norm[:, None, :].clamp(min=1e-12)

    def rows(self) -> list[dict]:
        """One record per image and value: image, value, distance per layer, probability, label."""
        out = []
        for n in range(self.distance.shape[0]):
            for v, value in enumerate(self.values.tolist()):
                row = {"image": self.image_name(n), "value": value}
                for i in range(len(self.layers)):
                    row[f"distance_{self.layer_title(i)}"] = float(self.distance[n, v, i])
                row["prob"] = float(self.prob[n, v])
                row["label"] = int(self.label[n, v])
                row["label_name"] = self.class_name(int(self.label[n, v]))
                out.append(row)
        return out

    def to_dict(self) -> dict:
        """A JSON-ready summary: the sweep, and per layer and image the curves and their extremes."""
        rel = self.relative_distance
        far, near = self.farthest, self.nearest
        kept = (self.label == torch.as_tensor(self.targets)[:, None]).float().mean(1)
        return {
            "method": "invariance", "transform": self.transform, "unit": self.unit, "fill": self.fill,
            "values": self.values.tolist(), "input_shape": list(self.input.shape),
            "layers": [{"name": n, "alias": self.aliases[i] if i < len(self.aliases) else None,
                        "max_distance": float(self.distance[..., i].max()),
                        "mean_relative_distance": rel[..., i].mean(0).tolist(),
                        "mean_relative_distance_at_nearest": float(rel[:, near, i].mean()),
                        "mean_relative_distance_at_farthest": float(rel[:, far, i].mean())}
                       for i, n in enumerate(self.layers)],
            "nearest_value": float(self.values[near]), "farthest_value": float(self.values[far]),
            "targets_given": self.targets_given,
            "images": [{"name": self.image_name(n), "target": t, "target_name": name,
                        "clean_prob": float(self.clean_prob[n]),
                        "min_prob": float(self.prob[n].min()), "max_prob": float(self.prob[n].max()),
                        "label_kept": float(kept[n]),
                        "distance": self.distance[n].T.tolist(), "prob": self.prob[n].tolist(),
                        "label": self.label[n].tolist()}
                       for n, (t, name) in enumerate(zip(self.targets, self.target_names))],
            "stats": self.stats,
        }

    def save(self, out) -> list:
        """Write the plots (PNG), the curves (``.npy``, CSV) and ``result.json`` into folder ``out``.

        Files: ``distance_<layer>.png`` per layer (one curve per image), ``probability.png``,
        ``figure.png`` (example transformed images and the plots in a row, as in Fig. 5),
        ``invariance.csv`` (one row per image and value), ``distance.npy`` (``N x V x L``),
        ``prob.npy`` and ``label.npy`` (``N x V``), ``values.npy`` (``V``), ``norm.npy`` (``N x L``,
        the norms of the untransformed feature vectors), ``input.npy`` and ``result.json``. Nothing is written on error.

        Returns:
            list[Path]: the files written.
        """
        from introspect.plugin import OutputDir
        from introspect_invariance.figure import pictures

        drawn = pictures(self)
        summary = self.to_dict()
        summary["files"] = self.files(drawn)
        with OutputDir(out) as od:
            for name, picture in drawn.items():
                od.save_png(name, picture)
            od.save_npy("distance.npy", self.distance)
            od.save_npy("prob.npy", self.prob)
            od.save_npy("label.npy", self.label)
            od.save_npy("values.npy", self.values)
            od.save_npy("norm.npy", self.norm)
            od.save_npy("input.npy", self.input)
            od.save_csv("invariance.csv", self.rows())
            od.save_json("result.json", summary)
        return od.files

    def _repr_lines(self) -> list[str]:
        n, v, l_ = self.distance.shape
        rel = self.relative_distance
        lines = [f"InvarianceResult: {self.transform} by {v} values ({self.values.min():.3g} .. "
                 f"{self.values.max():.3g} {self.unit}) of {n} images, layers "
                 f"{short_list([self.layer_title(i) for i in range(l_)], 4)}"]
        far = self.farthest
        lines.append(
            "  distance / norm at "
            + f"{float(self.values[far]):.3g}: "
            + ", ".join(f"{self.layer_title(i)} {float(rel[:, far, i].mean()):.3f}" for i in range(min(l_, 4)))
        )
        lines.append(f"  p(target) {float(self.clean_prob.mean()):.3f} untransformed (mean), "
                     f"{float(self.prob.min()):.3f} at worst")
        lines.append(f"  distance {shape_text(self.distance)}, prob {shape_text(self.prob)}")
        return lines

    def _figures(self) -> dict:
        from introspect_invariance.figure import _file_part, pictures

        picture = drawn_once(lambda: pictures(self))
        names = [f"distance_{_file_part(self.layer_title(i))}" for i in range(len(self.layers))]
        return {n: picture(n) for n in ["figure", *names, "probability"]}

    def files(self, pictures: dict | None = None) -> dict[str, str]:
        """Every file :meth:`save` writes, by name, with what it holds (also listed in ``result.json``)."""
        if pictures is None:
            from introspect_invariance.figure import pictures as draw

            pictures = draw(self)
        n, v, l_ = self.distance.shape
        files = {name: f"distance at layer {name[len('distance_'):-len('.png')]} against the {self.unit}, "
                       "one curve per image" for name in pictures if name.startswith("distance_")}
        files["probability.png"] = "probability of each image's target class against the " + self.unit
        files["figure.png"] = "example transformed images and the plots in a row (Fig. 5)"
        files.update({
            "invariance.csv": "one row per image and value: distance per layer, probability, label",
            "distance.npy": f"{n} x {v} x {l_} (float64) feature distance to the untransformed image",
            "prob.npy": f"{n} x {v} probability of each image's target class",
            "label.npy": f"{n} x {v} (int64) most probable class",
            "values.npy": f"{v} (float64) the transformation values ({self.unit})",
            "norm.npy": f"{n} x {l_} (float64) norm of the untransformed feature vectors",
            "input.npy": f"{' x '.join(map(str, self.input.shape))} the untransformed inputs",
            "result.json": "this summary",
        })
        return files


# --------------------------------------------------------------------------------------------------
# arguments
# --------------------------------------------------------------------------------------------------
def default_layers(model: nn.Module) -> list[str]:
    """The paper's layer 1 and layer 7 for ``model``, as module names.

    The rule: the aliases ``conv1`` and ``fc7`` when the model has both (the bundled and ZFNet-shaped
    models); otherwise the first ``nn.Conv2d`` and the last ``nn.Linear`` but one (the penultimate
    fully connected layer, fc7 in AlexNet and VGG).

    Raises:
        IntrospectError: the model has no convolution or fewer than two linear layers (pass
            ``layers=`` / ``--layer``).

    Example:
        >>> default_layers(torchvision.models.vgg11())
        ['features.0', 'classifier.3']
    """
    try:
        return [resolve_layer(model, alias)[0] for alias in PAPER_LAYERS]
    except IntrospectError:
        pass
    convs = conv_layers(model)
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not convs or len(linears) < 2:
        raise IntrospectError(f"cannot choose the paper's layers 1 and 7: the model has {len(convs)} Conv2d and "
                              f"{len(linears)} Linear layers (the rule needs a Conv2d and two Linear); "
                              "pass --layer (see `introspect layers`)")
    return [convs[0], linears[-2]]


def _class_index(target, classes: list[str] | None, num_classes: int) -> int:
    """A class index from an index, a digit string or a class name (the shared resolver)."""
    return resolve_target(target, classes, num_classes)


def image_targets(targets, count: int, classes: list[str] | None, num_classes: int) -> list[int] | None:
    """One class index per image from ``targets`` (one for all, or one per image); ``None`` stays None."""
    if targets is None or (isinstance(targets, (list, tuple)) and not targets):
        return None
    if isinstance(targets, (numbers.Integral, str)):
        targets = [targets]
    if isinstance(targets, (torch.Tensor, np.ndarray)):
        targets = targets.reshape(-1).tolist()
    targets = list(targets)
    if len(targets) == 1:
        targets = targets * count
    if len(targets) != count:
        raise IntrospectError(f"got {len(targets)} targets for {count} images; give one target per image "
                              "or one for all")
    return [_class_index(t, classes, num_classes) for t in targets]


def _check_values(transform: str, values, hw) -> torch.Tensor:
    if values is None:
        return default_values(transform, hw)
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if v.numel() == 0:
        raise IntrospectError("values is empty; give at least one transformation value, e.g. values=[0, 4, 8]")
    if not bool(torch.isfinite(v).all()):
        raise IntrospectError(f"values must be finite numbers, got {v.tolist()}; drop NaN and inf")
    if transform == "scale" and not bool((v > 0).all()):
        raise IntrospectError(f"scale factors must be positive, got {v.tolist()}; e.g. values=[1.0, 1.2, 1.4]")
    return v


# --------------------------------------------------------------------------------------------------
# the method
# --------------------------------------------------------------------------------------------------
@notebook_progress
def invariance(model: nn.Module, images: torch.Tensor, *, transform: str = "translate",
               values: Sequence[float] | torch.Tensor | None = None,
               layers: Sequence[str | nn.Module] | str | nn.Module | None = None,
               targets=None, fill: str = "mean", batch_size: int = 64,
               mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
               names: Sequence[str] | None = None,
               progress: Progress | None = None) -> InvarianceResult:
    """Feature distances and class probability of images under a transformation (the paper's Fig. 5).

    Every image is transformed by every value (about its centre, bilinear resampling, see
    :mod:`introspect_invariance.transforms`) and run through ``model``. For each layer the feature
    vector (the layer's output, flattened per image) is compared with that of the untransformed
    image by Euclidean distance; the probability of each image's target class and the most probable
    class are read from the softmax of the output. Identity values (translation 0, scale 1, angle 0)
    reuse the untransformed pass, so their distance is exactly 0.

    Args:
        model (nn.Module): an image classifier returning ``N x K`` scores; run in eval mode (every
            module's training flag is restored afterwards) and never modified.
        images (Tensor): ``N x C x H x W`` (or ``C x H x W``) preprocessed images, on any device.
        transform (str): ``translate`` (vertical, input pixels, positive down), ``scale`` (factor)
            or ``rotate`` (degrees, counter-clockwise). Default ``translate``.
        values (sequence of float | Tensor | None): the ``V`` transformation values; default the
            paper's range scaled to the input (``translate``: -60..60 pixels by 10 at 224, i.e.
            -9..9 by 1 at 32; ``scale``: 1..1.8 by 0.1; ``rotate``: 0..360 by 10).
        layers (str | nn.Module | sequence | None): layers to compare, names, aliases or modules;
            default the paper's layers 1 and 7 (see :func:`default_layers`).
        targets (int | str | sequence | None): the class of each image (the true class), by index
            or name; one for all images or one per image. Default: the top class of each
            untransformed image.
        fill (str): what uncovered pixels hold: ``mean`` (default; the normalization mean, 0 in
            the model's input), ``gray`` (pixel value 0.5), ``zero`` (black) or ``blur``.
        batch_size (int): transformed images per forward pass (default 64); bounds the memory.
        mean, std (sequence of float | None): the input normalization; default the model's metadata.
        names (sequence of str | None): a name per image, for legends and the CSV.
        progress (Progress | None): ``progress("transform", images_done, images_total)`` after each
            batch of transformed images.

    Returns:
        InvarianceResult: ``distance`` ``N x V x L``, ``prob`` and ``label`` ``N x V`` and the
        metadata; ``.save(dir)`` writes plots, CSV, arrays and JSON.

    Raises:
        IntrospectError: unknown transform, fill or layer; empty or invalid values; a target count
            that is neither 1 nor N; a model whose output is not ``N x K``.

    Example:
        >>> model = introspect.load_model(None)
        >>> result = introspect.invariance(model, images, transform="rotate", values=[0, 90, 180])
        >>> result.distance.shape, result.prob.shape
        (torch.Size([5, 3, 2]), torch.Size([5, 3]))
        >>> result.save("invariance-out")
    """
    check_transform(transform)
    x = image_batch(images)
    if fill not in FILLS:
        raise IntrospectError(f"unknown fill {fill!r}; use one of {', '.join(FILLS)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise IntrospectError(f"batch_size must be a positive integer, got {batch_size!r}; e.g. 64")
    vals = _check_values(transform, values, tuple(x.shape[-2:]))
    meta = meta_of(model)
    mean = tuple(mean if mean is not None else meta.mean)
    std = tuple(std if std is not None else meta.std)
    if layers is None:
        layer_names = default_layers(model)
    else:
        given = [layers] if isinstance(layers, (str, nn.Module)) else list(layers)
        if not given:
            raise IntrospectError("layers is empty; give at least one layer, or None for the paper's layers")
        layer_names = list(dict.fromkeys(resolve_layer(model, layer)[0] for layer in given))
    if names is not None and len(names) != x.shape[0]:
        raise IntrospectError(f"got {len(names)} names for {x.shape[0]} images; give one name per image")
    x = to_model(x, model)

    start = time.perf_counter()
    with eval_mode(model):
        with torch.no_grad(), attach(model, layer_names) as rec:
            sweep = _Sweep(rec, layer_names, x, transform, vals, fill, mean, std)
            given = image_targets(targets, x.shape[0], meta.classes, sweep.num_classes)
            target_list = given if given is not None else sweep.clean_prob.argmax(1).tolist()
            sweep.run(target_list, batch_size, progress)
    return InvarianceResult(
        transform=transform, values=vals, layers=layer_names, distance=sweep.distance, norm=sweep.norm,
        prob=sweep.prob, label=sweep.label, label_prob=sweep.label_prob, targets=target_list,
        target_names=[meta.class_name(t) for t in target_list],
        clean_prob=sweep.clean_target,
        input=x.detach().float().cpu(), fill=fill, targets_given=given is not None,
        aliases=[alias_of(model, name) for name in layer_names],
        names=[str(s) for s in names] if names is not None else [], classes=meta.classes, mean=mean, std=std,
        stats={"passes": sweep.passes, "batch_size": batch_size, "seconds": round(time.perf_counter() - start, 4),
               "device": str(x.device)},
    )


def _flat(rec, layer_names: list[str]) -> list[torch.Tensor]:
    """Each layer's recorded output, flattened per image (float64)."""
    out = []
    for name in layer_names:
        if name not in rec.activations:
            raise IntrospectError(f"layer {name!r} did not run in the forward pass; "
                                  "choose another --layer (see `introspect layers`)")
        value = rec.activations[name]
        out.append(value.reshape(value.shape[0], -1).to(torch.float64))
    return out


class _Sweep:
    """The untransformed pass, then batches of (image, value) pairs compared against it."""

    def __init__(self, rec, layer_names, x, transform, values, fill, mean, std):
        self.rec, self.layer_names, self.x = rec, layer_names, x
        self.transform, self.values, self.fill, self.mean, self.std = transform, values, fill, mean, std
        logits = rec.forward(x)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise IntrospectError(f"invariance needs a classifier whose output is N x classes, got {shape}; "
                                  "wrap the model to return class scores")
        self.clean_logits = logits
        self.clean_prob = torch.softmax(logits.float(), 1)
        self.num_classes = int(logits.shape[1])
        self.clean = _flat(rec, layer_names)
        self.norm = torch.stack([f.norm(dim=1) for f in self.clean], 1).cpu()
        self.passes = 1

    def run(self, targets: list[int], batch_size: int, progress) -> None:
        n, v, l = self.x.shape[0], len(self.values), len(self.layer_names)
        self.distance = torch.zeros(n, v, l, dtype=torch.float64)
        self.clean_target = self.clean_prob.cpu()[torch.arange(n), torch.as_tensor(targets)]
        top = self.clean_prob.max(1)
        self.prob = self.clean_target[:, None].repeat(1, v)
        self.label = top.indices.cpu()[:, None].repeat(1, v)
        self.label_prob = top.values.cpu()[:, None].repeat(1, v)
        pairs = [(i, j) for i in range(n) for j in range(v)
                 if not is_identity(self.transform, float(self.values[j]))]
        for a in range(0, len(pairs), batch_size):
            chunk = pairs[a:a + batch_size]
            img = torch.tensor([i for i, _ in chunk])
            val = torch.tensor([j for _, j in chunk])
            batch = transform_images(self.x[img.to(self.x.device)], self.transform, self.values[val].tolist(),
                                     self.fill, self.mean, self.std)
            p = torch.softmax(self.rec.forward(batch).float(), 1)
            for k, feats in enumerate(_flat(self.rec, self.layer_names)):
                ref = self.clean[k][img.to(feats.device)]
                self.distance[img, val, k] = (feats - ref).norm(dim=1).cpu()
            t = torch.as_tensor(targets, device=p.device)[img.to(p.device)]
            self.prob[img, val] = p[torch.arange(len(chunk), device=p.device), t].cpu()
            best = p.max(1)
            self.label[img, val] = best.indices.cpu()
            self.label_prob[img, val] = best.values.cpu()
            self.passes += 1
            report_progress(progress, "transform", a + len(chunk), len(pairs))


__all__ = ["invariance", "InvarianceResult", "default_layers", "image_targets", "PAPER_LAYERS", "IDENTITY"]
