"""``occlusion(model, images, *, ...)``: every panel of the paper's Fig. 7 from one occluder sweep.

Zeiler & Fergus (Sec. 4.2, Fig. 7) slide a grey square over the image and, at every position, read
(b) the total activation of the strongest feature map of a layer, (d) the probability of the correct
class and (e) the most probable class; (c) is the deconvnet projection of that feature map for the
unoccluded image. Here one pass per position gives all of them, for any number of target classes and
layers, and the pass is incremental where that pays (:mod:`introspect.core.incremental`, chosen per
sweep by :mod:`introspect.core.sweep`).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from introspect.plugin import (
    FILLS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    IntrospectError,
    Progress,
    Shown,
    Sweep,
    SweepRunner,
    alias_of,
    attach,
    counted,
    drawn_once,
    eval_mode,
    fill_image,
    image_batch,
    last_conv_layer,
    meta_of,
    notebook_progress,
    prepare_engine,
    project_map,
    resolve_layer,
    shape_text,
    to_model,
)
from introspect.plugin import resolve_targets as _resolve_targets

#: The paper's geometry at 224 x 224: a 50-pixel square moved 10 pixels at a time (scaled for other sizes).
PAPER_INPUT, PAPER_SIZE, PAPER_STRIDE = 224, 50, 10


# --------------------------------------------------------------------------------------------------
# the result
# --------------------------------------------------------------------------------------------------
@dataclass(repr=False)
class OcclusionResult(Shown):
    """Everything one occluder sweep measured (Fig. 7 b-e), as tensors on the CPU.

    Attributes:
        input (Tensor): ``1 x C x H x W``, the preprocessed image.
        size, stride (tuple[int, int]): occluder side and step, in input pixels (rows, columns).
        fill (str): what the occluder holds (``gray``, ``mean``, ``zero``, ``blur``).
        ys, xs (Tensor): ``Py`` and ``Px`` top-left corners of the occluder along each axis.
        targets (list[int]): target classes; ``target_names`` their names.
        prob (Tensor): ``T x Py x Px`` probability of each target with the occluder at each position.
        label (Tensor): ``Py x Px`` (int64) most probable class at each position; ``label_prob`` its
            probability.
        clean_prob (Tensor): ``K`` class probabilities of the unoccluded image.
        layers (list[str]): layers read out; ``channels`` the feature map of each (default its
            strongest: the largest activation in the unoccluded image).
        activation (Tensor): ``L x Py x Px`` total activation of that feature map at each position;
            ``clean_activation`` (``L``) its value for the unoccluded image. The sum of the rectified
            map (``max(0, x)``, the paper's layer-5 maps) when ``rectified``, else the sum before
            the ReLU.
        rectified (bool): whether :attr:`activation` sums the rectified feature map.
        projection (Tensor | None): ``L x C x H x W`` deconvnet projection of each feature map for
            the unoccluded image (Fig. 7 c).
        aliases (list[str | None]): the paper's name of each layer (``conv5``), where it has one.
        classes (list[str] | None): class names of the model, if it has them.
        mean, std (tuple[float, ...]): the input normalization (to show the image).
        mode (str): ``incremental``, ``approximate``, ``full`` (whole forward passes) or ``mixed`` (the
            cost model timed both on a few positions; ``stats["chosen"]`` ran the rest), and
            ``fallback`` the reason when the incremental path could not be used.
        tau (float | None): the projective-field threshold of the approximate mode.
        approx_error (dict | None): approximate mode only: errors against exact incremental inference
            on a sample of positions.
        stats (dict): positions, batch size, seconds, and the multiply-adds of convolution and linear
            layers actually computed against a full forward pass per position (``work_fraction``).
    """

    input: torch.Tensor
    size: tuple[int, int]
    stride: tuple[int, int]
    fill: str
    ys: torch.Tensor
    xs: torch.Tensor
    targets: list[int]
    target_names: list[str]
    prob: torch.Tensor
    label: torch.Tensor
    label_prob: torch.Tensor
    clean_prob: torch.Tensor
    layers: list[str]
    channels: list[int]
    activation: torch.Tensor
    clean_activation: torch.Tensor
    projection: torch.Tensor | None = None
    rectified: bool = True
    aliases: list[str | None] = field(default_factory=list)
    classes: list[str] | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    mode: str = "incremental"
    fallback: str | None = None
    tau: float | None = None
    approx_error: dict | None = None
    stats: dict = field(default_factory=dict)

    def class_name(self, index: int) -> str:
        """The name of class ``index`` (its number when the model has no names)."""
        if self.classes and 0 <= index < len(self.classes):
            return str(self.classes[index])
        return str(index)

    def layer_title(self, i: int) -> str:
        """Layer ``i`` as people call it: its alias (``conv5``) when it has one, else its module name."""
        alias = self.aliases[i] if i < len(self.aliases) else None
        return alias or self.layers[i]

    @property
    def total_kind(self) -> str:
        """What panel (b) sums: ``rectified`` (``max(0, x)``) or ``pre-activation`` (before the ReLU)."""
        return "rectified" if self.rectified else "pre-activation"

    @property
    def clean_label(self) -> int:
        """The top class of the unoccluded image."""
        return int(self.clean_prob.argmax())

    def to_dict(self) -> dict:
        """A JSON-ready summary: geometry, targets, layers, extremes of each map, mode and timings."""
        targets = []
        for t, (index, name) in enumerate(zip(self.targets, self.target_names)):
            flat = int(self.prob[t].argmin())
            iy, ix = divmod(flat, self.prob.shape[2])
            targets.append({
                "index": index, "name": name, "clean_prob": float(self.clean_prob[index]),
                "min_prob": float(self.prob[t].min()), "max_prob": float(self.prob[t].max()),
                "most_important_box": [int(self.ys[iy]), int(self.xs[ix]),
                                       int(self.ys[iy]) + self.size[0], int(self.xs[ix]) + self.size[1]],
            })
        labels, counts = torch.unique(self.label, return_counts=True)
        return {
            "method": "occlusion",
            "input_shape": list(self.input.shape),
            "size": list(self.size), "stride": list(self.stride), "fill": self.fill,
            "positions": [len(self.ys), len(self.xs)],
            "ys": self.ys.tolist(), "xs": self.xs.tolist(),
            "clean_label": {"index": self.clean_label, "name": self.class_name(self.clean_label),
                            "prob": float(self.clean_prob.max())},
            "targets": targets,
            "labels": [{"index": int(i), "name": self.class_name(int(i)), "positions": int(c)}
                       for i, c in sorted(zip(labels.tolist(), counts.tolist()), key=lambda p: -p[1])],
            "total": self.total_kind,
            "layers": [{"name": self.layer_title(i), "module": n,
                        "alias": self.aliases[i] if i < len(self.aliases) else None, "channel": c,
                        "clean_total": float(a), "min_total": float(m.min()),
                        "max_total": float(m.max())}
                       for i, (n, c, a, m) in enumerate(zip(self.layers, self.channels, self.clean_activation,
                                                            self.activation))],
            "mode": self.mode, "fallback": self.fallback, "tau": self.tau, "approx_error": self.approx_error,
            "stats": self.stats,
        }

    def _repr_lines(self) -> list[str]:
        py, px = self.prob.shape[1:]
        lines = [f"OcclusionResult: {py} x {px} occluder positions (size {self.size[0]}, stride {self.stride[0]}, "
                 f"fill {self.fill}) over a {shape_text(self.input[0])} image, {self.mode} inference"]
        for t, name in enumerate(self.target_names[:2]):
            iy, ix = divmod(int(self.prob[t].argmin()), px)
            lines.append(f"  (d) p({name}): {float(self.clean_prob[self.targets[t]]):.3f} unoccluded, "
                         f"{float(self.prob[t].min()):.3f} at worst (occluder at y={int(self.ys[iy])}, "
                         f"x={int(self.xs[ix])})")
        for i in range(min(2, len(self.layers))):
            act = self.activation[i]
            lines.append(f"  (b) {self.layer_title(i)} map {self.channels[i]}: total {self.total_kind} activation "
                         f"{float(self.clean_activation[i]):.4g} unoccluded, {float(act.min()):.4g} .. "
                         f"{float(act.max()):.4g}")
        lines.append(f"  prob {shape_text(self.prob)}, label {shape_text(self.label)}, activation "
                     f"{shape_text(self.activation)}, projection {shape_text(self.projection)}")
        return lines[:4] + lines[-1:] if len(lines) > 5 else lines

    def _figures(self) -> dict:
        from introspect_occlusion.figure import file_part, panels

        panel = drawn_once(lambda: panels(self))
        out = {"figure": panel("figure")}
        out.update({n[:-4]: panel(n[:-4]) for n in self.files() if n.endswith(".png") and n != "figure.png"})
        if self.projection is None:
            for i in range(len(self.layers)):
                out[f"c_projection_{file_part(self.layer_title(i))}"] = (
                    "panel (c) needs the deconvnet projection, which was not computed: run occlusion with "
                    "project=True (the default)")
        return out

    def files(self) -> dict[str, str]:
        """Every file :meth:`save` writes, by name, with what it holds (also listed in ``result.json``)."""
        from introspect_occlusion.figure import panel_names

        py, px = self.prob.shape[1:]
        t, l_ = len(self.targets), len(self.layers)
        files = {
            "input.npy": f"{' x '.join(map(str, self.input.shape))} the preprocessed image the model saw",
            "prob.npy": f"{t} x {py} x {px} probability of each target class at each occluder position (Fig. 7 d)",
            "label.npy": f"{py} x {px} (int64) most probable class at each position (Fig. 7 e)",
            "label_prob.npy": f"{py} x {px} probability of that class",
            "activation.npy": f"{l_} x {py} x {px} total {self.total_kind} activation of each layer's "
                              "feature map at each position (Fig. 7 b)",
        }
        if self.projection is not None:
            files["projection.npy"] = (f"{' x '.join(map(str, self.projection.shape))} deconvnet projection of "
                                       "each layer's feature map, unoccluded image (Fig. 7 c)")
        files.update(panel_names(self))
        files["result.json"] = "this summary"
        return files

    def save(self, out) -> list:
        """Write the panels (PNG), the maps (``.npy``) and ``result.json`` into folder ``out``.

        Files (one array per quantity; ``result.json`` lists them all under ``files``):
        ``prob.npy`` (``T x Py x Px``), ``label.npy`` and ``label_prob.npy`` (``Py x Px``),
        ``activation.npy`` (``L x Py x Px``), ``projection.npy`` (``L x C x H x W``), ``input.npy``,
        ``result.json``, and the panels ``a_input.png``, ``b_activation_<layer>.png``,
        ``c_projection_<layer>.png``, ``d_prob_<class>.png``, ``e_label.png`` and ``figure.png`` (all
        panels in a row); layers are named as in the paper (``conv5``) where the model has aliases.
        Nothing is written on error.

        Returns:
            list[Path]: the files written.
        """
        from introspect.plugin import OutputDir
        from introspect_occlusion.figure import panels

        summary = self.to_dict()
        summary["files"] = self.files()
        with OutputDir(out) as od:
            od.save_npy("input.npy", self.input)
            od.save_npy("prob.npy", self.prob)
            od.save_npy("label.npy", self.label)
            od.save_npy("label_prob.npy", self.label_prob)
            od.save_npy("activation.npy", self.activation)
            if self.projection is not None:
                od.save_npy("projection.npy", self.projection)
            for name, picture in panels(self).items():
                od.save_png(name, picture)
            od.save_json("result.json", summary)
        return od.files


# --------------------------------------------------------------------------------------------------
# arguments
# --------------------------------------------------------------------------------------------------
def default_geometry(hw: tuple[int, int]) -> tuple[int, int]:
    """The paper's occluder (50 pixels, stride 10 at 224 x 224) scaled to an input of ``hw``."""
    side = min(hw)
    return max(1, round(PAPER_SIZE * side / PAPER_INPUT)), max(1, round(PAPER_STRIDE * side / PAPER_INPUT))


def _pair(value, what: str) -> tuple[int, int]:
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair):
        raise IntrospectError(f"{what} must be a positive integer (or a pair), got {value!r}; e.g. {what}=10")
    return (int(pair[0]), int(pair[1]))


def positions(hw: tuple[int, int], size: tuple[int, int], stride: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left corners along each axis: ``0, stride, 2 * stride, ...`` while the square fits."""
    if size[0] > hw[0] or size[1] > hw[1]:
        raise IntrospectError(f"occluder {size[0]}x{size[1]} is larger than the {hw[0]}x{hw[1]} input; "
                              "use a smaller --size")
    return torch.arange(0, hw[0] - size[0] + 1, stride[0]), torch.arange(0, hw[1] - size[1] + 1, stride[1])


def resolve_targets(targets, classes: list[str] | None, num_classes: int, default: int) -> list[int]:
    """Class indices from indices, names (exact, case-insensitive, unique prefix) or digit strings;
    ``None`` -> ``[default]`` (the shared resolver of the core)."""
    return _resolve_targets(targets, classes, num_classes, default)


def strongest_channel(activation: torch.Tensor) -> int:
    """The feature map (channel) with the largest single activation in ``1 x C x ...``."""
    return int(activation[0].reshape(activation.shape[1], -1).max(1).values.argmax())


def _totals(value: torch.Tensor, channel: int, rectify: bool = False) -> torch.Tensor:
    """``B`` sums of feature map ``channel`` (float64), of ``max(0, x)`` when ``rectify``; for
    ``B x C`` outputs the unit itself."""
    v = value[:, channel]
    if rectify:
        v = v.clamp(min=0)
    return v.reshape(v.shape[0], -1).sum(1, dtype=torch.float64)


class _Readout:
    """Accumulates the total of one feature map per position from window states, via the summed-area
    table of the clean map (so a window costs one sum of the window, not a sum of the whole map)."""

    def __init__(self, clean: torch.Tensor, channel: int, rectify: bool = False):
        self.channel, self.rectify = channel, rectify
        self.clean_total = _totals(clean, channel, rectify)[0]
        if clean.dim() == 4:
            m = clean[0, channel].to(torch.float64)
            if rectify:
                m = m.clamp(min=0)
            self.sat = torch.nn.functional.pad(m.cumsum(0).cumsum(1), (1, 0, 1, 0))
        self.values: list[torch.Tensor] = []

    def __call__(self, state, batch: int) -> None:
        if state.kind == "full":
            self.values.append(_totals(state.value, self.channel, self.rectify))
        elif state.kind == "win":
            w = state.window
            h, wd = w.hw
            y0, x0 = w.oy, w.ox
            s = self.sat
            clean_part = s[y0 + h, x0 + wd] - s[y0, x0 + wd] - s[y0 + h, x0] + s[y0, x0]
            win = state.value[:, self.channel]
            win_part = (win.clamp(min=0) if self.rectify else win).sum((1, 2), dtype=torch.float64)
            self.values.append(self.clean_total + win_part - clean_part)
        else:  # no position of the sweep changes this layer
            self.values.append(self.clean_total.expand(batch))


# --------------------------------------------------------------------------------------------------
# the method
# --------------------------------------------------------------------------------------------------
@notebook_progress
def occlusion(
    model: nn.Module,
    images: torch.Tensor,
    *,
    size: int | tuple[int, int] | None = None,
    stride: int | tuple[int, int] | None = None,
    fill: str = "gray",
    targets: int | str | Sequence[int | str] | None = None,
    layers: str | nn.Module | Sequence[str | nn.Module] | None = None,
    channels: Sequence[int] | None = None,
    batch_size: int | None = None,
    approximate: float | None = None,
    check_positions: int = 16,
    incremental: bool | None = None,
    project: bool = True,
    rectify: bool = True,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    blur_sigma: float = 8.0,
    progress: Progress | None = None,
) -> OcclusionResult:
    """Occlusion sensitivity (Zeiler & Fergus, Fig. 7): slide an occluder over an image and read, from
    one pass per position, every target's probability, the top label and the total activation of
    each layer's strongest feature map; plus that map's deconvnet projection.

    The occluder's top-left corner takes the positions ``0, stride, 2 * stride, ...`` along each axis
    while the square fits inside the image. (captum's ``Occlusion`` adds one more, clipped window at
    the end of an axis when ``(H - size)`` is not a multiple of ``stride``; the maps agree wherever
    both have windows.) The occluded image is ``fill_image(image, fill)`` inside the square and the
    image outside (:mod:`introspect.occluders`).

    Passes are incremental where that pays: each layer's output for the clean image is kept, and for
    a batch of positions only the part of each layer that the occluder can change is recomputed (see
    :mod:`introspect.core.incremental`); the maps equal full forward passes to float rounding. A cost
    model (:mod:`introspect.core.sweep`) runs batched whole passes instead where gathering the changed
    windows would cost more than it saves (``mode`` is then ``full``, or ``mixed`` when both paths were
    timed on a few positions). Models ``torch.fx`` cannot trace run whole forward passes (``mode == "full"``).

    Memory: everything runs under ``torch.no_grad()`` (except the projection, one backward pass of
    the clean image). Peak memory is the clean image's cached layer outputs plus ``batch_size`` times
    the changed windows of the layers alive at once -- and, from the first global layer on (flatten,
    linear, adaptive pooling to another size), ``batch_size`` whole outputs of those layers -- plus at
    most 64 MB of precomputed gather indices. It grows with ``batch_size``, not with the number of
    positions (the maps themselves are ``positions x targets`` numbers).

    Args:
        model (nn.Module): an image classifier returning ``N x K`` scores; it is run in eval mode
            (training flags are restored afterwards). Its batch elements must be independent.
        images (Tensor): one preprocessed image, ``1 x C x H x W`` (or ``C x H x W``), on any device;
            it is moved to the model's device.
        size (int | (int, int) | None): occluder side in pixels; default the paper's 50 at 224,
            scaled to the input (``round(50 * min(H, W) / 224)``).
        stride (int | (int, int) | None): step in pixels; default 10 at 224, scaled the same way.
        fill (str): ``gray`` (default), ``mean``, ``zero`` or ``blur`` (see :func:`introspect.occluders.fill_image`).
        targets (int | str | sequence | None): classes to map, by index or name (names from the
            model's metadata); default the top predicted class of the unoccluded image.
        layers (str | nn.Module | sequence | None): layers for panel (b), names, aliases (``conv5``)
            or modules; default the last convolutional layer.
        channels (sequence of int | None): the feature map of each layer; default its strongest.
        batch_size (int | None): positions per call; bounds the memory. Default: as many as fit in
            about 512 MB of windows and patches (estimated from the plan), at most 512.
        approximate (float | None): ``tau`` in ``(0, 1]`` for Krypton-style projective-field
            thresholding (each convolution or pooling output window capped at ``tau`` of the map
            side); default ``None``, exact.
        check_positions (int): approximate mode: positions (evenly spread) re-run exactly to report
            the error (default 16; 0 to skip).
        incremental (bool | None): ``None`` (default): the cost model of :mod:`introspect.core.sweep`
            picks incremental inference or batched whole passes from the work fraction and the
            measured gathering overhead; ``True``: incremental inference (when the model traces);
            ``False``: whole forward passes (batched), for comparison.
        project (bool): compute the deconvnet projections of panel (c) (default True).
        rectify (bool): panel (b) sums the rectified feature map, ``max(0, x)`` (default True: the
            paper's layer-5 maps are rectified); ``False`` sums it before the ReLU (pre-activation).
        mean, std (sequence of float | None): the input normalization; default the model's metadata.
        blur_sigma (float): Gaussian sigma for ``fill="blur"``.
        progress (Progress | bool | None): ``progress("occlude", positions_done, positions_total)`` after
            each batch; default None: a bar in a Jupyter notebook, nothing elsewhere; False: none.

    Returns:
        OcclusionResult: maps ``T x Py x Px`` (probabilities), ``Py x Px`` (labels),
        ``L x Py x Px`` (activations), the projections and metadata; ``.save(dir)`` writes them.

    Raises:
        IntrospectError: bad arguments (occluder larger than the image, unknown target or layer,
            a model whose output is not ``N x K``).

    Example:
        >>> result = introspect.occlusion(model, image, size=50, stride=10, targets=["Afghan hound"])
        >>> result.prob.shape, result.label.shape
        (torch.Size([1, 18, 18]), torch.Size([18, 18]))
        >>> result.save("occlusion-out")
    """
    args = _check_arguments(model, images, size, stride, fill, batch_size, approximate, layers, mean, std)
    with eval_mode(model):
        clean = _clean_pass(model, args, targets, channels)
        run = _run(model, args, clean, incremental, approximate, check_positions, blur_sigma, progress, rectify)
        projection = _projections(model, args.x, args.layer_names, clean.channels) if project else None
    return _package(model, args, clean, run, projection, approximate, rectify)


@dataclass
class _Arguments:
    """The checked arguments of one sweep."""

    x: torch.Tensor
    fill: str
    size: tuple[int, int]
    stride: tuple[int, int]
    ys: torch.Tensor
    xs: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    layer_names: list[str]
    batch_size: int | None


@dataclass
class _Clean:
    """What the unoccluded image gave: logits, probabilities, layer outputs, targets, channels."""

    logits: torch.Tensor
    prob: torch.Tensor
    layers: dict
    targets: list[int]
    channels: list[int]


@dataclass
class _Run:
    """The maps of the sweep and how they were computed."""

    prob: torch.Tensor
    label: torch.Tensor
    label_prob: torch.Tensor
    activation: torch.Tensor
    mode: str
    fallback: str | None
    error: dict | None
    stats: dict


def _check_arguments(model, image, size, stride, fill, batch_size, approximate, layers, mean, std) -> _Arguments:
    """Every argument checked (one-line errors), the image batched and on the model's device."""
    x = image_batch(image)
    if x.shape[0] != 1:
        raise IntrospectError(f"occlusion takes one image (1 x C x H x W), got shape {tuple(image.shape)}; "
                              "pass image[i:i+1]")
    if fill not in FILLS:
        raise IntrospectError(f"unknown fill {fill!r}; use one of {', '.join(FILLS)}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise IntrospectError(f"batch_size must be a positive integer, got {batch_size!r}; e.g. 64")
    if approximate is not None and not 0 < float(approximate) <= 1:
        raise IntrospectError(f"approximate (tau) must be in (0, 1], got {approximate}; e.g. 0.5")
    x = to_model(x, model)
    hw = (int(x.shape[-2]), int(x.shape[-1]))
    d_size, d_stride = default_geometry(hw)
    size = _pair(d_size if size is None else size, "size")
    stride = _pair(d_stride if stride is None else stride, "stride")
    ys, xs = positions(hw, size, stride)
    meta = meta_of(model)
    layer_names = [resolve_layer(model, layer)[0] for layer in _as_list(layers, lambda: last_conv_layer(model))]
    return _Arguments(x, fill, size, stride, ys, xs, tuple(mean if mean is not None else meta.mean),
                      tuple(std if std is not None else meta.std), list(dict.fromkeys(layer_names)), batch_size)


def _clean_pass(model, args: _Arguments, targets, channels) -> _Clean:
    """One pass of the unoccluded image: the logits, the layers read out, the targets and channels."""
    with torch.no_grad(), attach(model, args.layer_names) as rec:
        logits = rec.forward(args.x)
    clean_layers = dict(rec.activations)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise IntrospectError(f"occlusion needs a classifier whose output is N x classes, got {shape}; "
                              "wrap the model to return class scores")
    missing = [n for n in args.layer_names if n not in clean_layers]
    if missing:
        raise IntrospectError(f"layer {missing[0]!r} did not run in the forward pass; "
                              "choose another --layer (see `introspect layers`)")
    prob = torch.softmax(logits.float(), 1)[0]
    meta = meta_of(model)
    targets = list(dict.fromkeys(resolve_targets(targets, meta.classes, logits.shape[1], int(prob.argmax()))))
    if channels is None:
        channels = [strongest_channel(clean_layers[n]) for n in args.layer_names]
    channels = [int(c) for c in channels]
    if len(channels) != len(args.layer_names):
        raise IntrospectError(f"got {len(channels)} channels for {len(args.layer_names)} layers; "
                              "give one channel per layer")
    for n, c in zip(args.layer_names, channels):
        if not 0 <= c < clean_layers[n].shape[1]:
            raise IntrospectError(f"channel {c} is out of range for layer {n!r}; "
                                  f"choose one of 0..{clean_layers[n].shape[1] - 1}")
    return _Clean(logits, prob, clean_layers, targets, channels)


def _run(model, args: _Arguments, clean: _Clean, incremental, approximate, check_positions, blur_sigma,
         progress, rectify: bool = True) -> _Run:
    """The sweep: incremental inference or whole passes (the cost model of
    :mod:`introspect.core.sweep` when ``incremental`` is ``None``), the maps collected."""
    x = args.x
    fill_t = fill_image(x, args.fill, args.mean, args.std, blur_sigma)
    sweep = Sweep(args.ys.repeat_interleave(len(args.xs)).to(x.device), args.xs.repeat(len(args.ys)).to(x.device),
                  args.size)
    start = time.perf_counter()
    engine, fallback = None, None
    if incremental is not False or approximate is not None:
        engine, fallback = prepare_engine(model, x, clean.logits, args.layer_names, clean.layers)
    readouts = {n: _Readout(clean.layers[n], c, rectify) for n, c in zip(args.layer_names, clean.channels)}
    runner = SweepRunner(model, x, fill_t, sweep, engine, args.layer_names,
                         lambda name, state, batch: readouts[name](state, batch),
                         None if approximate is None else float(approximate), args.batch_size)
    path = "full" if incremental is False else ("incremental" if incremental or approximate is not None else "auto")
    logits = runner.run(path, counted(progress, "occlude", len(sweep.ys)))
    seconds = time.perf_counter() - start
    prob, label, label_prob, acts = _collect(logits, readouts.values(), clean.targets)
    error = None
    if engine is not None and approximate is not None and check_positions > 0:
        error = _approx_error(runner, (prob, label, label_prob, acts), clean, check_positions, rectify)
    mode = {"incremental": "approximate" if approximate is not None else "incremental"}.get(runner.path, runner.path)
    stats = {"positions": len(sweep.ys), "seconds": round(seconds, 4), "device": str(x.device), **runner.stats}
    if runner.path == "mixed":
        stats["chosen"] = runner.chosen
    return _Run(prob, label, label_prob, acts, mode, fallback, error, stats)


def _package(model, args: _Arguments, clean: _Clean, run: _Run, projection, approximate,
             rectify: bool = True) -> OcclusionResult:
    """The result: maps shaped ``Py x Px``, names and metadata."""
    meta = meta_of(model)
    py, px = len(args.ys), len(args.xs)
    names = args.layer_names
    return OcclusionResult(
        input=args.x.detach().cpu(), size=args.size, stride=args.stride, fill=args.fill, ys=args.ys, xs=args.xs,
        targets=clean.targets, target_names=[meta.class_name(t) for t in clean.targets],
        prob=run.prob.reshape(len(clean.targets), py, px), label=run.label.reshape(py, px),
        label_prob=run.label_prob.reshape(py, px), clean_prob=clean.prob.cpu(),
        layers=names, channels=clean.channels, activation=run.activation.reshape(len(names), py, px),
        clean_activation=torch.stack([_totals(clean.layers[n], c, rectify)[0]
                                      for n, c in zip(names, clean.channels)]).float().cpu(),
        projection=projection, rectified=bool(rectify), aliases=[alias_of(model, n) for n in names],
        classes=list(meta.classes) if meta.classes else None, mean=args.mean, std=args.std,
        mode=run.mode, fallback=run.fallback, tau=None if approximate is None else float(approximate),
        approx_error=run.error, stats=run.stats,
    )


def _as_list(value, default: Callable):
    if value is None or (isinstance(value, (list, tuple)) and not value):
        return [default()]
    if isinstance(value, (str, nn.Module)):
        return [value]
    return list(value)


def _collect(logits: torch.Tensor, readouts, targets: list[int]):
    """Target probabilities ``T x P``, top labels and their probabilities (``P``), activations ``L x P``."""
    prob = torch.softmax(logits.float(), 1)
    top = prob.max(1)
    t = torch.as_tensor(targets, device=prob.device)
    readouts = list(readouts)
    acts = torch.stack([torch.cat(r.values) for r in readouts]) if readouts else torch.zeros(0, len(prob))
    return prob[:, t].T.cpu(), top.indices.cpu(), top.values.cpu(), acts.float().cpu()


def _approx_error(runner: SweepRunner, approx_out, clean: _Clean, count: int, rectify: bool = True) -> dict:
    """Exact incremental inference on ``count`` evenly spread positions, against the approximation."""
    sweep = runner.sweep
    n = len(sweep.ys)
    idx = torch.linspace(0, n - 1, min(count, n)).round().long().unique()
    sub = Sweep(sweep.ys[idx.to(sweep.ys.device)], sweep.xs[idx.to(sweep.xs.device)], sweep.box)
    readouts = {name: _Readout(clean.layers[name], c, rectify) for name, c in zip(runner.layers, clean.channels)}
    exact = SweepRunner(runner.model, runner.x, runner.fill, sub, runner.engine, runner.layers,
                        lambda name, state, batch: readouts[name](state, batch), None, runner.batch_size)
    prob, label, _, acts = _collect(exact.run("incremental"), readouts.values(), clean.targets)
    a_prob, a_label, _, a_acts = approx_out
    scale = torch.stack([_totals(clean.layers[n_], c, rectify)[0] for n_, c in
                         zip(runner.layers, clean.channels)]).abs().float().cpu().clamp(min=1e-12)
    act_err = ((a_acts[:, idx] - acts).abs().max(1).values / scale) if len(acts) else torch.zeros(0)
    return {
        "checked_positions": int(len(idx)),
        "prob_max_abs": float((a_prob[:, idx] - prob).abs().max()),
        "prob_mean_abs": float((a_prob[:, idx] - prob).abs().mean()),
        "label_agreement": float((a_label[idx] == label).float().mean()),
        "activation_max_rel": [float(v) for v in act_err],
    }


def _projections(model, x, layer_names, channels) -> torch.Tensor:
    """Deconvnet projection (Fig. 7 c) of each layer's feature map for the unoccluded image.

    The feature map (rectified; the raw map if rectifying leaves nothing) is the only non-zero part of
    its layer, projected down with the core's deconvnet: rectified reconstructions at the ReLUs, the
    max-pooling switches, transposed filters.
    """
    return torch.stack([project_map(model, x, name, channel, raw_if_negative=True)[0]
                        for name, channel in zip(layer_names, channels)]).float().cpu()


__all__ = ["occlusion", "OcclusionResult", "default_geometry", "positions", "resolve_targets", "strongest_channel"]
