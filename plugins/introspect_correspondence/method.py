"""Correspondence analysis (Zeiler & Fergus 2014, Sec. 4.3, Table 1).

Mask the same part (an eye, the nose) in each of ``N`` images and look at how the feature vector of a
layer changes: ``eps_i = x_i - x~_i``. If the network puts the parts of different images in
correspondence, masking the same part should change the representation in the same way everywhere,
so the sign patterns of the ``eps_i`` agree and their Hamming distances are small. The control masks
a random region of the same size in each image instead.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from introspect.plugin import (
    FILLS,
    IntrospectError,
    Progress,
    Shown,
    aliases,
    attach,
    eval_mode,
    fill_image,
    last_conv_layer,
    meta_of,
    notebook_progress,
    readable_errors,
    report_progress,
    resolve_layer,
    short_list,
)
from introspect_correspondence.measure import hamming_matrix, pair_stats, sign_pattern
from introspect_correspondence.parts import boxes_per_image, check_box, load_parts

PAPER_LAYERS = ("relu5", "relu7")


# --------------------------------------------------------------------------------------------------
# the result
# --------------------------------------------------------------------------------------------------
@dataclass(repr=False)
class CorrespondenceResult(Shown):
    """Table 1 of the paper for one model, image set and part set, with everything behind it.

    The number of a cell (row ``r``, layer ``l``) is the mean, over the ``N(N-1)/2`` unordered pairs
    of distinct images ``{i, j}``, of the normalized Hamming distance
    ``H(sign(eps_i), sign(eps_j)) / D`` (``D``: the length of the layer's flattened output), and the
    "±" is the population standard deviation (``ddof=0``) over the same pairs. Over ordered pairs
    ``i != j`` both are the same (each pair counts twice), so the mean is also the paper's
    ``Delta_l / (N (N-1) D)``. For the ``random`` row the pairs of every random trial of every part
    are pooled (``P * T * N(N-1)/2`` values).

    Attributes:
        parts (list[str]): part names, in the order given.
        layers (list[str]): layer names as given (aliases such as ``relu5`` kept).
        layer_names (list[str]): the canonical module names of ``layers``.
        image_names (list[str]): one name per image (file names, or ``image 0``, ``image 1``...).
        feature_size (dict[str, int]): layer -> ``D``.
        mean, std (dict[str, dict[str, float]]): row (each part, then ``"random"`` when there are
            random trials) -> layer -> the Table 1 cell.
        delta (dict[str, dict[str, float]]): row -> layer -> the paper's unnormalized
            ``Delta_l = sum_{i != j} H`` (for ``random``, its mean over trials and parts).
        pairs (dict[str, dict[str, Tensor]]): part -> layer -> ``N x N`` float64 matrix of
            ``H / D`` (symmetric, zero diagonal).
        random_pairs (dict[str, dict[str, Tensor]]): part -> layer -> ``T x N x N`` matrices for the
            random masks of that part's size.
        boxes (dict[str, Tensor]): part -> ``N x 4`` int64 boxes ``(y0, x0, y1, x1)`` in model-input
            pixels (end-exclusive).
        random_boxes (dict[str, Tensor]): part -> ``T x N x 4`` random boxes of the same sizes.
        input (Tensor): ``N x C x H x W`` the exact preprocessed images (on the CPU).
        mean_std (tuple): the input normalization ``(mean, std)``, per channel, for display.
        fill, seed, random_trials, tol: the settings used.
    """

    parts: list[str]
    layers: list[str]
    layer_names: list[str]
    image_names: list[str]
    feature_size: dict[str, int]
    mean: dict[str, dict[str, float]]
    std: dict[str, dict[str, float]]
    delta: dict[str, dict[str, float]]
    pairs: dict[str, dict[str, torch.Tensor]]
    random_pairs: dict[str, dict[str, torch.Tensor]]
    boxes: dict[str, torch.Tensor]
    random_boxes: dict[str, torch.Tensor]
    input: torch.Tensor
    mean_std: tuple = ((0.5,), (0.5,))
    fill: str = "gray"
    seed: int = 0
    random_trials: int = 0
    tol: float = 0.0

    @property
    def rows(self) -> list[str]:
        """Table rows: the parts, then ``random`` when random trials were run."""
        return list(self.mean)

    def cell(self, row: str, layer: str) -> tuple[float, float]:
        """``(mean, std)`` of row ``row`` (a part or ``"random"``) at ``layer`` (a name of :attr:`layers`)."""
        if row not in self.mean:
            raise IntrospectError(f"no row {row!r}; rows are {', '.join(self.rows)}")
        if layer not in self.mean[row]:
            raise IntrospectError(f"no layer {layer!r}; layers are {', '.join(self.layers)}")
        return self.mean[row][layer], self.std[row][layer]

    def _decimals(self) -> int:
        values = [abs(v) for r in self.mean.values() for v in r.values() if v and math.isfinite(v)]
        values += [abs(v) for r in self.std.values() for v in r.values() if v and math.isfinite(v)]
        smallest = min(values) if values else 1.0
        return int(min(6, max(3, 1 - math.floor(math.log10(smallest)))))

    def table(self, markdown: bool = False) -> str:
        """The table in the layout of the paper's Table 1: rows parts and ``random``, columns layers.

        Args:
            markdown (bool): a Markdown table (as in ``table.md``) instead of aligned text.

        Returns:
            str: the table with a one-line caption saying what the numbers are.
        """
        d = self._decimals()
        n = len(self.image_names)
        caption = (f"Mean feature sign change (Zeiler & Fergus, Table 1): H(sign eps_i, sign eps_j) / D,\n"
                   f"mean ± std over the {n * (n - 1) // 2} pairs of {n} images"
                   + (f"; random: {self.random_trials} trials per part, pooled" if "random" in self.mean else "")
                   + ". Lower = more consistent change.")
        header = ["Occlusion location"] + [f"{l} (D={self.feature_size[l]})" for l in self.layers]
        body = [[row] + [f"{self.mean[row][l]:.{d}f} ± {self.std[row][l]:.{d}f}" for l in self.layers]
                for row in self.rows]
        if markdown:
            lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + [":-:"] * len(self.layers)) + "|"]
            lines += ["| " + " | ".join(r) + " |" for r in body]
            return caption.replace("\n", " ") + "\n\n" + "\n".join(lines) + "\n"
        widths = [max(len(r[c]) for r in [header] + body) for c in range(len(header))]

        def fmt(r: list[str]) -> str:
            return "  ".join(v.ljust(widths[c]) if c == 0 else v.rjust(widths[c]) for c, v in enumerate(r))

        return caption + "\n" + "\n".join([fmt(header), "-" * len(fmt(header))] + [fmt(r) for r in body])

    def __str__(self) -> str:
        return self.table()

    def _repr_lines(self) -> list[str]:
        n = len(self.image_names)
        lines = [f"CorrespondenceResult: {len(self.parts)} parts x {len(self.layers)} layers "
                 f"({short_list(self.layers, 4)}) over {n} images ({n * (n - 1) // 2} pairs), "
                 f"{self.random_trials} random trials"]
        for row in self.rows[:3]:
            cells = ", ".join(f"{l} {self.mean[row][l]:.3f}" for l in self.layers[:4])
            lines.append(f"  {row}: {cells}")
        lines.append("  mean sign change H/D per layer (Table 1); print(result) for the table")
        return lines[:5]

    def _figures(self) -> dict:
        from introspect_correspondence.figure import boxes_figure, pairs_figure

        return {"boxes": lambda: boxes_figure(self), "pairs": lambda: pairs_figure(self)}

    def to_dict(self) -> dict:
        """Everything as JSON types: the table, the settings, the boxes and every per-pair matrix."""
        return {
            "method": "correspondence",
            "measure": "normalized Hamming distance H(sign(eps_i), sign(eps_j)) / D; mean and population "
                       "std over unordered image pairs i < j",
            "images": list(self.image_names),
            "parts": list(self.parts),
            "layers": list(self.layers),
            "layer_names": list(self.layer_names),
            "feature_size": dict(self.feature_size),
            "fill": self.fill,
            "seed": self.seed,
            "random_trials": self.random_trials,
            "tol": self.tol,
            "table": {row: {l: {"mean": self.mean[row][l], "std": self.std[row][l], "delta": self.delta[row][l]}
                            for l in self.layers} for row in self.rows},
            "boxes": {p: b.tolist() for p, b in self.boxes.items()},
            "random_boxes": {p: b.tolist() for p, b in self.random_boxes.items()},
            "pairs": {p: {l: m.tolist() for l, m in v.items()} for p, v in self.pairs.items()},
            "random_pairs": {p: {l: m.tolist() for l, m in v.items()} for p, v in self.random_pairs.items()},
        }

    def save(self, out: str | Path) -> list[Path]:
        """Write ``table.md``, ``result.json``, ``input.npy``, the per-pair matrices and two PNGs.

        Files: ``pairs_<part>_<layer>.npy`` (``N x N``), ``random_<part>_<layer>.npy``
        (``T x N x N``), ``boxes.png`` (each image with its part boxes; second row: the first random
        trial's boxes), ``pairs.png`` (the per-pair matrices as colour maps). All or nothing.

        Args:
            out (str | Path): the output folder (created if needed).

        Returns:
            list[Path]: the files written.
        """
        from introspect.plugin import OutputDir
        from introspect_correspondence.figure import boxes_figure, pairs_figure

        stems = _file_stems([*self.pairs, *self.random_pairs, *(l for v in self.pairs.values() for l in v)])
        with OutputDir(out) as od:
            od.save_text("table.md", self.table(markdown=True))
            od.save_json("result.json", self.to_dict())
            od.save_npy("input.npy", self.input)
            for part, by_layer in self.pairs.items():
                for layer, m in by_layer.items():
                    od.save_npy(f"pairs_{stems[part]}_{stems[layer]}.npy", m)
            for part, by_layer in self.random_pairs.items():
                for layer, m in by_layer.items():
                    od.save_npy(f"random_{stems[part]}_{stems[layer]}.npy", m)
            od.save_png("boxes.png", boxes_figure(self))
            od.save_png("pairs.png", pairs_figure(self))
        return od.files


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("_") or "x"


def _file_stems(names) -> dict[str, str]:
    """A distinct, short file-name stem for each part or layer name: characters unsafe in file names
    become ``_``; a long name is cut; names that would share a stem (``a/b``, ``a b``, ``a_b``) get a
    short hash of the original, so no file overwrites another."""
    import hashlib
    from collections import Counter

    def digest(name: str) -> str:
        return hashlib.sha1(str(name).encode("utf-8", "surrogatepass")).hexdigest()[:8]

    stems = {}
    for name in dict.fromkeys(str(n) for n in names):
        stem = _safe(name)
        stems[name] = stem if len(stem) <= 60 else f"{stem[:60]}-{digest(name)}"
    counts = Counter(stems.values())
    return {n: f"{s}-{digest(n)}" if counts[s] > 1 else s for n, s in stems.items()}


# --------------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------------
def _followed_by_relu(model: nn.Module, name: str) -> str:
    leaves = [(n, m) for n, m in model.named_modules() if n and not list(m.children())]
    for k, (n, _) in enumerate(leaves[:-1]):
        if n == name and isinstance(leaves[k + 1][1], nn.ReLU):
            return leaves[k + 1][0]
    return name


def default_layers(model: nn.Module) -> list[str]:
    """The layers used when none are named: the paper's "layer 5" and "layer 7".

    The paper reads the outputs of layer 5 and layer 7, i.e. the rectified responses of conv5 and
    fc7. For models with the paper's aliases (the bundled ZFNet and AlexNets) that is
    ``["relu5", "relu7"]``. Otherwise: the last ``Conv2d`` and the last-but-one ``Linear`` (when the
    model has two or more), each replaced by the ``ReLU`` module that directly follows it in
    definition order, if one does.

    Example:
        >>> default_layers(introspect.zfnet())
        ['relu5', 'relu7']
    """
    table = aliases(model)
    if all(a in table for a in PAPER_LAYERS):
        return list(PAPER_LAYERS)
    layers = [_followed_by_relu(model, last_conv_layer(model))]
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if len(linears) >= 2:
        layers.append(_followed_by_relu(model, linears[-2]))
    return layers


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------
def _prepare(model: nn.Module, images, parts, names):
    """Images as ``N x C x H x W`` on the model's device, their names and the checked input boxes."""
    device = _device(model)
    if isinstance(parts, (str, Path)):
        parts = load_parts(parts)
    if isinstance(images, (list, tuple)) and images and all(isinstance(t, torch.Tensor) for t in images):
        images = torch.stack([t.squeeze(0) if t.dim() == 4 else t for t in images])
    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise IntrospectError(
                f"images must be an N x C x H x W tensor, got shape {tuple(images.shape)}; stack the images"
            )
        n, _, h, w = images.shape
        _check_count(n)
        if names is None:
            names = [f"image {i}" for i in range(n)]
        elif len(names) != n:
            raise IntrospectError(f"got {len(names)} names for {n} images; give one name per image")
        names = [str(s) for s in names]
        spec = boxes_per_image(parts, names)
        boxes = {p: [check_box(b, (h, w), f"part {p!r} of {names[i]!r}", "model input")
                     for i, b in enumerate(bs)] for p, bs in spec.items()}
        return images.detach().to(device), names, boxes
    if isinstance(images, (str, Path)):
        images = [images]
    paths = [Path(p) for p in images]
    _check_count(len(paths))
    from introspect.plugin import Preprocess, read_image

    pre = Preprocess.from_meta(meta_of(model))
    spec = boxes_per_image(parts, [str(p) for p in paths])
    tensors, boxes = [], {p: [] for p in spec}
    for i, path in enumerate(paths):
        img = read_image(path)
        tensors.append(pre(img))
        geo = pre.geometry(img.size)
        width, height = img.size
        for part, bs in spec.items():
            where = f"part {part!r} of image {path.name!r}"
            box = check_box(bs[i], (height, width), where, "image")
            mapped = geo.to_input(box, outward=True, clip=True)
            if mapped[2] <= mapped[0] or mapped[3] <= mapped[1]:
                raise IntrospectError(
                    f"{where}: box {list(box)} falls outside the model's center crop of the image; "
                    "choose a part inside the crop or a model with a larger input"
                )
            boxes[part].append(tuple(int(v) for v in mapped))
    x = torch.stack(tensors).to(device)
    return x, [p.name for p in paths], boxes


def _check_count(n: int) -> None:
    if n < 2:
        raise IntrospectError(
            f"correspondence compares pairs of images but got {n}; pass at least 2 images (the paper used 5)"
        )


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _random_boxes(boxes: dict[str, list], hw: tuple[int, int], trials: int, seed: int) -> dict[str, torch.Tensor]:
    """For each part, ``trials x N x 4`` boxes of the part's size per image at uniform positions."""
    rng = np.random.default_rng(seed)
    h, w = hw
    out = {}
    for part, bs in boxes.items():
        arr = np.zeros((trials, len(bs), 4), dtype=np.int64)
        for i, (y0, x0, y1, x1) in enumerate(bs):
            bh, bw = y1 - y0, x1 - x0
            ys = rng.integers(0, h - bh + 1, size=trials)
            xs = rng.integers(0, w - bw + 1, size=trials)
            arr[:, i] = np.stack([ys, xs, ys + bh, xs + bw], axis=1)
        out[part] = torch.from_numpy(arr)
    return out


# --------------------------------------------------------------------------------------------------
# the method
# --------------------------------------------------------------------------------------------------
@notebook_progress
def correspondence(
    model: nn.Module,
    images: torch.Tensor | Sequence[str | Path],
    *,
    parts: Mapping[str, Any] | str | Path,
    layers: Sequence[str] | str | None = None,
    random_trials: int = 10,
    fill: str = "gray",
    seed: int = 0,
    tol: float = 1e-5,
    batch_size: int = 64,
    blur_sigma: float = 8.0,
    names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    progress: Progress | None = None,
) -> CorrespondenceResult:
    """Correspondence analysis (the paper's Sec. 4.3, Table 1): does masking the same part change
    the representation the same way in every image?

    For each part, image ``i`` and layer ``l``: ``eps_i = x_i - x~_i``, the layer's flattened output
    for the image minus that for the image with the part's box filled (``fill``, the occluder
    convention of :mod:`introspect.occluders`). The Table 1 number is the mean over the ``N(N-1)/2``
    unordered pairs of distinct images of ``H(sign(eps_i), sign(eps_j)) / D``: the Hamming distance of
    the two sign patterns (values -1, 0, +1) divided by the feature length ``D``; "±" is the population
    std over those pairs (both are the same over ordered pairs ``i != j``, so the mean equals the
    paper's ``Delta_l = sum_{i != j} H`` divided by ``N(N-1)D``). Changes with
    ``|eps| <= tol * max|x_i|`` count as no change (sign 0), which absorbs float rounding.

    The control ("random" row): for each part and each of ``random_trials`` trials, every image gets
    a box of that part's size (in that image) at a uniformly random position (``numpy`` generator
    seeded with ``seed``); pairs are pooled over trials and parts.

    Layer outputs are read exactly as the named module returns them, in a forward pass that stops
    there: ``conv5`` is the convolution's output before the ReLU (even when the ReLU is in-place),
    ``relu5`` the rectified one. Default (``layers=None``): :func:`default_layers`, i.e. ``relu5``
    and ``relu7`` for the bundled models, the paper's "layer 5" and "layer 7" outputs.

    Args:
        model (nn.Module): the network; run in eval mode under ``torch.no_grad()`` (flags restored).
        images (Tensor | sequence of paths): ``N x C x H x W`` preprocessed images (``N >= 2``; a
            list of ``C x H x W`` or ``1 x C x H x W`` tensors is stacked), or image files, read and
            preprocessed for ``model`` (:class:`introspect.images.Preprocess`).
        parts (Mapping | str | Path): part name -> box(es) ``[y0, x0, y1, x1]`` (end-exclusive):
            one box for all images, a list with one per image, or a mapping image name -> box; or a
            JSON/YAML file of that (see :mod:`introspect_correspondence.parts`). In model-input pixels
            for a tensor, in each file's own pixels for files (mapped through the preprocessing).
        layers (sequence of str | str | None): layer names or aliases (default: see above).
        random_trials (int): random-mask trials per part (default 10; 0: no random row).
        fill (str): ``gray`` (default), ``mean``, ``zero`` or ``blur``.
        seed (int): seed of the random positions (default 0).
        tol (float): relative tolerance for "no change" (default 1e-5; 0 for exact signs).
        batch_size (int): images per forward pass (default 64).
        blur_sigma (float): Gaussian sigma in pixels for ``fill="blur"`` (default 8).
        names (sequence of str | None): image names for a tensor (default ``image 0``...); with files
            the file names are used. Parts given per image name are matched against these.
        mean, std (sequence of float | None): input normalization for the fill (default: the model's
            :class:`~introspect.models.ModelMeta`, ImageNet for a plain module).
        progress (Progress | None): ``progress("correspondence", batches_done, batches_total)`` after
            each batch of masked images.

    Returns:
        CorrespondenceResult: the table (``.mean``, ``.std``, ``.table()``), per-pair matrices,
        boxes, random controls and the input.

    Raises:
        IntrospectError: fewer than 2 images; no parts; an empty box, a box outside the image, a part
            missing for an image or the wrong number of boxes; an unknown layer or fill.

    Example:
        >>> parts = {"right_eye": [6, 3, 10, 8], "left_eye": [6, 13, 10, 18], "nose": [9, 8, 15, 13]}
        >>> result = introspect.correspondence(model, faces, parts=parts, layers=["relu5", "relu7"], random_trials=10)
        >>> print(result.table())
        >>> result.mean["nose"]["relu5"] < result.mean["random"]["relu5"]
    """
    if fill not in FILLS:
        raise IntrospectError(f"unknown fill {fill!r}; use one of {', '.join(FILLS)}")
    if isinstance(random_trials, bool) or not isinstance(random_trials, int) or random_trials < 0:
        raise IntrospectError(f"random_trials must be a whole number >= 0, got {random_trials!r}")
    if batch_size < 2:
        raise IntrospectError(f"batch_size must be at least 2, got {batch_size}")
    if not (tol >= 0):
        raise IntrospectError(f"tol must be >= 0, got {tol}")
    if isinstance(layers, str):
        layers = [layers]
    layers = list(dict.fromkeys(layers)) if layers else default_layers(model)
    canonical = [resolve_layer(model, l)[0] for l in layers]
    meta = meta_of(model)
    mean = tuple(mean) if mean is not None else tuple(meta.mean)
    std = tuple(std) if std is not None else tuple(meta.std)

    x, names, boxes = _prepare(model, images, parts, names)
    n, _, h, w = x.shape
    part_names = list(boxes)
    random = _random_boxes(boxes, (h, w), random_trials, seed)
    fills = fill_image(x, fill, mean, std, blur_sigma)

    # every mask of image i: the parts, then the random boxes (part-major, trial-minor)
    masks = [[boxes[p][i] for p in part_names]
             + [tuple(random[p][t, i].tolist()) for p in part_names for t in range(random_trials)]
             for i in range(n)]
    m = len(masks[0])
    per_batch = batch_size - 1
    chunks = math.ceil(m / per_batch)
    signs: dict[str, torch.Tensor] = {}
    done, total = 0, len(layers) * n * chunks
    with eval_mode(model), torch.no_grad():
        for layer, name in zip(layers, canonical):
            with attach(model, [name]) as rec:
                for i in range(n):
                    for c in range(chunks):
                        todo = masks[i][c * per_batch:(c + 1) * per_batch]
                        batch = x[i:i + 1].repeat(len(todo) + 1, 1, 1, 1)
                        for k, (y0, x0, y1, x1) in enumerate(todo, start=1):
                            batch[k, :, y0:y1, x0:x1] = fills[i, :, y0:y1, x0:x1]
                        with readable_errors(x, x.shape[1:]):
                            rec.forward(batch, stop=True)
                        if name not in rec.activations:
                            raise IntrospectError(
                                f"layer {layer!r} produced no output in the model's forward pass; choose a layer "
                                "the forward pass uses (see `introspect layers`)"
                            )
                        feats = rec.activations[name].reshape(len(todo) + 1, -1)
                        eps = feats[:1] - feats[1:]
                        scale = feats[0].abs().max()
                        if layer not in signs:
                            signs[layer] = torch.zeros(m, n, feats.shape[1], dtype=torch.int8, device=x.device)
                        signs[layer][c * per_batch:c * per_batch + len(todo), i] = sign_pattern(eps, tol, scale)
                        done += 1
                        report_progress(progress, "correspondence", done, total)

    return _summarize(signs, layers, canonical, part_names, names, boxes, random, random_trials,
                      x, (mean, std), fill, seed, tol)


def _summarize(signs, layers, canonical, part_names, names, boxes, random, trials, x, mean_std, fill, seed, tol):
    p_count = len(part_names)
    pairs = {p: {} for p in part_names}
    random_pairs = {p: {} for p in part_names}
    mean: dict[str, dict[str, float]] = {p: {} for p in part_names}
    std: dict[str, dict[str, float]] = {p: {} for p in part_names}
    delta: dict[str, dict[str, float]] = {p: {} for p in part_names}
    if trials:
        mean["random"], std["random"], delta["random"] = {}, {}, {}
    feature_size = {}
    for layer in layers:
        s = signs[layer]
        d = s.shape[-1]
        feature_size[layer] = d
        for k, part in enumerate(part_names):
            counts = hamming_matrix(s[k])
            pairs[part][layer] = (counts.double() / d).cpu()
            mean[part][layer], std[part][layer] = pair_stats(pairs[part][layer])
            delta[part][layer] = float(counts.sum().item())
        if trials:
            pooled, sums = [], []
            for k, part in enumerate(part_names):
                start = p_count + k * trials
                counts = hamming_matrix(s[start:start + trials])
                random_pairs[part][layer] = (counts.double() / d).cpu()
                pooled.append(random_pairs[part][layer])
                sums.append(counts.sum(dim=(1, 2)).double())
            mean["random"][layer], std["random"][layer] = pair_stats(torch.cat(pooled))
            delta["random"][layer] = torch.cat(sums).mean().item()
    return CorrespondenceResult(
        parts=part_names, layers=list(layers), layer_names=list(canonical), image_names=list(names),
        feature_size=feature_size, mean=mean, std=std, delta=delta, pairs=pairs,
        random_pairs=random_pairs if trials else {},
        boxes={p: torch.tensor(boxes[p], dtype=torch.int64) for p in part_names},
        random_boxes=random if trials else {},
        input=x.detach().cpu(), mean_std=(tuple(mean_std[0]), tuple(mean_std[1])), fill=fill, seed=seed,
        random_trials=trials, tol=tol,
    )


__all__ = ["correspondence", "CorrespondenceResult", "default_layers", "PAPER_LAYERS"]
