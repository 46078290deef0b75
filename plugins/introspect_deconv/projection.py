"""``project``: deconvnet projections of feature maps of one layer, for a batch of images."""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field

import torch
from torch import nn

from introspect.plugin import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Deconvnet,
    Field,
    Frame,
    IntrospectError,
    Rule,
    Shown,
    check_channels,
    display_name,
    image_batch,
    last_conv_layer,
    layer_field,
    meta_of,
    model_device,
    model_dtype,
    resolve_layer,
    shape_text,
    strongest,
)
from introspect.plugin import PROJECTION_MODES as MODES


def file_stem(name: str) -> str:
    """``name`` made safe as a file name (``layer4.1.conv2`` stays, ``a/b`` becomes ``a_b``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "layer"


def as_batch(images, model: nn.Module) -> torch.Tensor:
    """``images`` as an ``(N, C, H, W)`` float tensor on the model's device (a ``(C, H, W)`` image too)."""
    images = image_batch(images)
    return images.to(model_device(model, images.device), model_dtype(model))


def receptive_boxes(field: Field, position: torch.Tensor, image_hw) -> torch.Tensor:
    """``(P, 4)`` int64 boxes ``(y0, x0, y1, x1)``, clipped to the image, of units at ``(P, 2)`` positions."""
    boxes = [field.receptive_box(int(y), int(x), tuple(image_hw)) for y, x in position.tolist()]
    return torch.tensor(boxes, dtype=torch.int64).view(-1, 4)


def _map_box(field: Field, activation_map: torch.Tensor, image_hw) -> list[int]:
    """The union of the receptive boxes of the positive units of one map (empty: ``[0, 0, 0, 0]``)."""
    if activation_map.dim() == 0:
        return [0, 0, image_hw[0], image_hw[1]] if activation_map > 0 else [0, 0, 0, 0]
    ys, xs = torch.nonzero(activation_map > 0, as_tuple=True)
    if len(ys) == 0:
        return [0, 0, 0, 0]
    a = field.receptive_box(int(ys.min()), int(xs.min()), tuple(image_hw))
    b = field.receptive_box(int(ys.max()), int(xs.max()), tuple(image_hw))
    return [a[0], a[1], b[2], b[3]]


def _channels_arg(channels, n_maps: int, name: str) -> list[int] | None:
    return check_channels(channels, n_maps, name, "the strongest maps")


@dataclass(repr=False)
class Projection(Shown):
    """Deconvnet projections of activations of one layer (Zeiler & Fergus 2014, Sec. 2.1).

    ``P`` projections, ordered by image and then by rank (strongest map first). All tensors are on
    the CPU.

    Attributes:
        layer (str): canonical module name (``"features.12"``).
        name (str): the paper's alias when there is one (``"conv5"``), else ``layer``.
        mode (str): ``"max"`` (only the strongest activation of each map was kept) or ``"map"`` (the
            whole map was projected).
        method (str): ``"chain"`` (the fast windowed path) or ``"autograd"``.
        projections (Tensor): ``(P, C_in, H, W)`` float32, in input pixel space; zero outside the
            receptive field in mode ``"max"``.
        image_index (Tensor): ``(P,)`` int64, the image of the batch.
        channel (Tensor): ``(P,)`` int64, the feature map.
        position (Tensor): ``(P, 2)`` int64, ``(y, x)`` of the map's strongest activation.
        activation (Tensor): ``(P,)`` float32, its value.
        boxes (Tensor): ``(P, 4)`` int64 ``(y0, x0, y1, x1)`` (end-exclusive, clipped to the image):
            the receptive field of that unit (``"max"``), or of all positive units of the map
            (``"map"``; ``[0, 0, 0, 0]`` when none is positive).
        inputs (Tensor): ``(N, C_in, H, W)`` the exact (preprocessed) input.
        field (Field): the layer's receptive field at this input size.
        mean, std (tuple[float, ...]): the input normalization, to show image patches.
        image_names (list[str] | None): a name per image (file names in the CLI).
        rule (str): the name of the backward rule (``"deconvnet"``).
        activation_rules (dict[str, str]): the rule each activation type on the way down got, e.g.
            ``{"ReLU6": "deconvnet", "Sigmoid gate": "fixed", "MyAct": "gradient (no rule)"}``
            (see the README's rules table).
    """

    layer: str
    name: str
    mode: str
    method: str
    projections: torch.Tensor
    image_index: torch.Tensor
    channel: torch.Tensor
    position: torch.Tensor
    activation: torch.Tensor
    boxes: torch.Tensor
    inputs: torch.Tensor
    field: Field
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    image_names: list[str] | None = dc_field(default=None)
    rule: str = "deconvnet"
    activation_rules: dict = dc_field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.projections.shape[0])

    def to_dict(self) -> dict:
        """JSON-ready metadata: layer, mode, field, and per projection image, channel, position,
        activation and box (the arrays themselves are not included)."""
        rows = []
        for i in range(len(self)):
            n = int(self.image_index[i])
            row = {"index": i, "image": n, "channel": int(self.channel[i]),
                   "position": self.position[i].tolist(), "activation": float(self.activation[i]),
                   "box": self.boxes[i].tolist()}
            if self.image_names is not None:
                row["image_name"] = self.image_names[n]
            rows.append(row)
        return {
            "layer": self.layer, "name": self.name, "mode": self.mode, "method": self.method,
            "rule": self.rule, "activation_rules": dict(self.activation_rules),
            "input_size": list(self.inputs.shape[1:]),
            "field": {"size": list(self.field.size), "stride": list(self.field.jump),
                      "lo": list(self.field.lo), "global": self.field.is_global},
            "array": f"{file_stem(self.name)}.npy", "array_shape": list(self.projections.shape),
            "projections": rows,
        }

    def _repr_lines(self) -> list[str]:
        n = int(self.inputs.shape[0])
        lines = [f"Projection: {len(self)} deconvnet projections of {self.name} ({self.mode} mode, {self.method}) "
                 f"for {n} image{'s' if n != 1 else ''} of {shape_text(self.inputs[0])}"]
        if len(self):
            maps = ", ".join(f"{int(c)} ({float(a):.3g})" for c, a in zip(self.channel[:5], self.activation[:5]))
            lines.append(f"  maps (activation): {maps}{', ...' if len(self) > 5 else ''}")
        lines.append(f"  projections {shape_text(self.projections)}, receptive field "
                     f"{self.field.size[0]}x{self.field.size[1]}")
        return lines

    def _figures(self) -> dict:
        """The grid ``save`` writes: each projection (cropped to its box, grey = 0) beside the
        matching image patch, labelled ``"conv5 ch 17 act 12.3"``."""
        from introspect_deconv.figure import projection_figure

        return {file_stem(self.name): lambda: projection_figure(self)}

    def save(self, out: str | os.PathLike):
        """Write ``<name>.npy``, ``<name>.png``, ``result.json`` and ``input.npy`` into folder ``out``
        (all or nothing). Returns the written paths."""
        from introspect_deconv.figure import save_projections

        return save_projections([self], out)


def project(model: nn.Module, images: torch.Tensor, *, layer: str | nn.Module | None = None,
            channels: int | Sequence[int] | None = None, mode: str = "max", maps: int = 9,
            method: str = "auto", batch_size: int = 16, rule: str | Rule = "deconvnet") -> Projection:
    """Project feature maps of ``layer`` back to pixel space with a deconvnet.

    For each image and chosen feature map, every other activation of the layer is set to zero and
    the kept ones are mapped down through the layers below: unpooling with the max-pool switches
    recorded on the way up, rectifying (``relu``) the reconstruction, filtering with the transposed
    filters (Zeiler & Fergus 2014, Sec. 2.1, Fig. 1). Contrast normalization (LRN) is passed
    through on the way down; BatchNorm is applied as its transpose (a per-channel scale). Every
    image of the batch gets its own projections.

    Args:
        model (nn.Module): any convnet (ZFNet, AlexNet, VGG, ResNet, your own). It runs in eval mode
            for the call; every module's training flag is restored afterwards.
        images (Tensor): ``(N, C, H, W)`` (or ``(C, H, W)``) preprocessed images.
        layer (str | nn.Module | None): layer name, alias (``"conv5"``) or module; default the last
            ``Conv2d`` layer.
        channels (int | sequence of int | None): the feature maps to project, the same for every
            image. Default ``None``: for each image, its ``maps`` maps with the strongest
            activation (ties: lower channel first).
        mode (str): ``"max"`` (default, the paper's): keep only the strongest activation of each map;
            ``"map"``: project the whole map (its positive part).
        maps (int): how many maps per image when ``channels`` is None (default 9).
        method (str): ``"auto"`` (default): the fast windowed path for chains of
            Conv2d/activation/MaxPool2d/LRN/BatchNorm2d/Dropout modules, autograd otherwise;
            ``"chain"`` or ``"autograd"`` to force one (both give the same numbers). The result's
            ``method`` says which one ran.
        batch_size (int): images per forward pass (default 16).
        rule (str | Rule): the backward rule, default ``"deconvnet"``; change one activation type's
            rule with ``RULES["deconvnet"].but(silu="gradient")``. Which rule each activation type
            got is recorded in the result's ``activation_rules``.

    Returns:
        Projection: ``P = N * K`` projections ``(P, C, H, W)`` with their image, channel, position,
        activation and receptive-field box; ``K`` is ``len(channels)`` or ``maps``.

    Example:
        >>> model = introspect.zfnet().eval()                    # or introspect.load_model("zf.pt")
        >>> x = torch.randn(2, 3, 224, 224)                      # or introspect.load_image(path, model)
        >>> result = introspect.project(model, x, layer="conv5")  # the 9 strongest conv5 maps per image
        >>> result.projections.shape, result.image_index.tolist()
        (torch.Size([18, 3, 224, 224]), [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1])
        >>> result.save("out/")     # conv5.npy, conv5.png, result.json, input.npy
    """
    if mode not in MODES:
        raise IntrospectError(f"unknown mode {mode!r}; use 'max' (strongest activation) or 'map' (whole map)")
    if isinstance(maps, bool) or not isinstance(maps, int) or maps < 1:
        raise IntrospectError(f"maps must be a positive integer, got {maps!r}; e.g. 9")
    if batch_size < 1:
        raise IntrospectError(f"batch_size must be at least 1, got {batch_size}")
    x = as_batch(images, model)
    name, _ = resolve_layer(model, layer if layer is not None else last_conv_layer(model))
    image_hw = tuple(x.shape[-2:])
    field = layer_field(model, name, tuple(x.shape[1:]))
    whole_image = Frame.of(field, image_hw, "map")  # projections are returned on the whole input
    parts = {k: [] for k in ("proj", "img", "ch", "pos", "act", "box")}
    used_method = None
    activation_rules: dict[str, str] = {}
    for first in range(0, x.shape[0], batch_size):
        net = Deconvnet(model, x[first:first + batch_size], name, method, rule=rule)
        used_method = net.method
        activation_rules.update(net.activation_rules)
        values, positions = strongest(net.activations)
        n, n_maps = values.shape
        chosen = _channels_arg(channels, n_maps, display_name(model, name))
        if chosen is None:
            strength = values.float().cpu().nan_to_num(float("-inf"))
            order = torch.sort(strength, dim=1, descending=True, stable=True)
            ch = order.indices[:, :min(maps, n_maps)]
        else:
            ch = torch.tensor(chosen, dtype=torch.int64).expand(n, -1)
        k = ch.shape[1]
        img = torch.arange(n).repeat_interleave(k)
        ch = ch.reshape(-1)
        pos = positions.cpu()[img, ch]
        dense, _ = net.windows(img, ch, whole_image, mode=mode, position=pos)
        parts["proj"].append(dense)
        parts["img"].append(img + first)
        parts["ch"].append(ch)
        parts["pos"].append(pos)
        parts["act"].append(values.float().cpu()[img, ch])
        if mode == "max":
            parts["box"].append(receptive_boxes(field, pos, image_hw))
        else:
            maps = net.activations.float().cpu()
            parts["box"].append(torch.tensor([_map_box(field, maps[i, c], image_hw)
                                              for i, c in zip(img.tolist(), ch.tolist())],
                                             dtype=torch.int64).view(-1, 4))
    meta = meta_of(model)
    return Projection(
        layer=name, name=display_name(model, name), mode=mode, method=used_method,
        projections=torch.cat(parts["proj"]), image_index=torch.cat(parts["img"]),
        channel=torch.cat(parts["ch"]), position=torch.cat(parts["pos"]),
        activation=torch.cat(parts["act"]), boxes=torch.cat(parts["box"]),
        inputs=x.detach().float().cpu(), field=field, mean=tuple(meta.mean), std=tuple(meta.std),
        rule=net.rule.name, activation_rules=activation_rules,
    )


__all__ = ["Projection", "project", "file_stem", "as_batch", "receptive_boxes"]
