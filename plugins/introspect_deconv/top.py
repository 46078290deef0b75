"""``top_k``: the strongest activations of each feature map over a data set, projected (Fig. 2).

The data set is streamed in batches through a forward pass that stops at the layer; a running top-k
per feature map keeps the strongest activation of each image (value, image, position), so memory is
``O(channels * k)`` whatever the size of the data set. Each image counts at most once per map -- with
its strongest position -- so a map's k winners are k different images, as in the paper's figures.
Ties are broken by the earlier image (data-set order), and within an image by the first position in
row-major order. After the pass the winners' images are read again, the winners projected with the
deconvnet and their receptive-field patches cut.

On several processes (``torchrun``; :mod:`introspect_deconv.distributed`) each rank streams every
``world``-th batch and the running top-k are merged exactly at the end; rank 0 projects the winners.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path

import torch
from torch import nn

from introspect.plugin import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Deconvnet,
    Field,
    Frame,
    Group,
    IntrospectError,
    Shown,
    attach,
    check_channels,
    check_ranks,
    cut_windows,
    dataset_batches,
    dataset_image,
    dataset_size,
    display_name,
    eval_mode,
    group_of,
    last_conv_layer,
    layer_field,
    meta_of,
    model_device,
    notebook_progress,
    readable_errors,
    resolve_layer,
    shape_text,
    strongest,
)
from introspect_deconv.distributed import gather_top_k
from introspect_deconv.projection import receptive_boxes

Progress = Callable[[str, int, int], None]


class RunningTopK:
    """The k strongest (value, image, position) entries of each feature map seen so far.

    Args:
        channels (Tensor): ``(C,)`` int64, the maps to follow (indices into the layer's channels).
        k (int): entries kept per map.

    Attributes:
        values (Tensor): ``(C, k)`` strongest activations, descending; ``-inf`` where empty.
        images (Tensor): ``(C, k)`` int64 image index; ``-1`` where empty.
        positions (Tensor): ``(C, k, 2)`` int64 map position ``(y, x)``.

    Example:
        >>> running = RunningTopK(torch.arange(256), k=9)
        >>> running.update(activations_of_batch, first_image=0)   # (B, 256, 13, 13)
    """

    def __init__(self, channels: torch.Tensor, k: int):
        c = len(channels)
        self.channels = channels.to(torch.int64).cpu()
        self.k = k
        self.values = torch.full((c, k), float("-inf"))
        self.images = torch.full((c, k), -1, dtype=torch.int64)
        self.positions = torch.zeros(c, k, 2, dtype=torch.int64)

    def update(self, activations: torch.Tensor, first_image: int = 0, images: torch.Tensor | None = None) -> None:
        """Merge a batch: ``activations`` ``(B, C_all, h, w)`` (or ``(B, C_all)``) of images
        ``first_image .. first_image + B - 1``, or of the data-set indices ``images`` (``(B,)``
        int64, increasing, each larger than every index merged before: a shard of the data set)."""
        values, positions = strongest(activations[:, self.channels.to(activations.device)])
        b = values.shape[0]
        values = values.float().cpu().nan_to_num(float("-inf")).t()          # (C, B)
        positions = positions.cpu().transpose(0, 1)                           # (C, B, 2)
        if images is None:
            images = torch.arange(first_image, first_image + b)
        images = images.to(torch.int64).cpu().expand(len(self.channels), b)
        all_values = torch.cat([self.values, values], dim=1)
        # stable: among equal values the earlier entry (earlier image) stays first
        order = torch.sort(all_values, dim=1, descending=True, stable=True).indices[:, :self.k]
        self.values = all_values.gather(1, order)
        self.images = torch.cat([self.images, images], dim=1).gather(1, order)
        all_positions = torch.cat([self.positions, positions], dim=1)
        self.positions = all_positions.gather(1, order[..., None].expand(-1, -1, 2))


@dataclass(repr=False)
class TopK(Shown):
    """The top-k images of each feature map of one layer, their projections and patches.

    All tensors are on the CPU. ``M`` maps (``channels``), ``k`` entries each, strongest first;
    empty entries (fewer than ``k`` images) have ``image_index == -1``.

    Attributes:
        layer (str): canonical module name; ``name``: the paper's alias when there is one.
        k (int): entries per map.
        channels (Tensor): ``(M,)`` int64 feature maps.
        activation (Tensor): ``(M, k)`` float32 strongest activation in each winning image.
        image_index (Tensor): ``(M, k)`` int64 index into the data set.
        position (Tensor): ``(M, k, 2)`` int64 ``(y, x)`` on the map.
        boxes (Tensor): ``(M, k, 4)`` int64 receptive-field box in input pixels, clipped to the image.
        origins (Tensor): ``(M, k, 2)`` int64 input position of the corner of each stored window.
        projections (Tensor | None): ``(M, k, C_in, fh, fw)`` float32 deconvnet projections in their
            window (the receptive field, or the whole image when that is smaller); None when not
            projected.
        patches (Tensor | None): ``(M, k, C_in, fh, fw)`` float32 preprocessed input in the same
            windows (zero outside the image).
        field (Field): the layer's receptive field; ``image_hw``: the input size.
        images_seen (int): images streamed.
        image_names (list[str] | None): names (file paths) of the winning images, by data-set index
            (only for the indices that won), when the data set has ``paths``.
        method (str | None): the projection path, ``"chain"`` or ``"autograd"``.
        mean, std (tuple): the input normalization, to show patches.
        activation_rules (dict[str, str]): the rule each activation type on the way down got (see
            :class:`introspect_deconv.projection.Projection`); empty when not projected.
    """

    layer: str
    name: str
    k: int
    channels: torch.Tensor
    activation: torch.Tensor
    image_index: torch.Tensor
    position: torch.Tensor
    boxes: torch.Tensor
    origins: torch.Tensor
    projections: torch.Tensor | None
    patches: torch.Tensor | None
    field: Field
    image_hw: tuple[int, int]
    images_seen: int
    image_names: dict[int, str] | None = None
    method: str | None = None
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    activation_rules: dict = dc_field(default_factory=dict)

    def frame_box(self, j: int, r: int) -> list[int]:
        """The receptive box of entry ``(j, r)`` in the coordinates of its stored window."""
        y0, x0, y1, x1 = self.boxes[j, r].tolist()
        oy, ox = self.origins[j, r].tolist()
        return [y0 - oy, x0 - ox, y1 - oy, x1 - ox]

    def to_dict(self) -> dict:
        """JSON-ready metadata (every entry of every map; arrays are not included)."""
        maps = []
        for j in range(len(self.channels)):
            entries = []
            for r in range(self.k):
                n = int(self.image_index[j, r])
                if n < 0:
                    continue
                entry = {"rank": r, "image": n, "activation": float(self.activation[j, r]),
                         "position": self.position[j, r].tolist(), "box": self.boxes[j, r].tolist(),
                         "window_origin": self.origins[j, r].tolist()}
                if self.image_names is not None and n in self.image_names:
                    entry["image_name"] = self.image_names[n]
                entries.append(entry)
            maps.append({"channel": int(self.channels[j]), "top": entries})
        shape = list(self.projections.shape) if self.projections is not None else None
        return {
            "method": "top_k", "layer": self.layer, "name": self.name, "k": self.k,
            "images_seen": self.images_seen, "input_size": [int(self.patches.shape[2]) if self.patches is not None
                                                           else None, *self.image_hw],
            "field": {"size": list(self.field.size), "stride": list(self.field.jump),
                      "lo": list(self.field.lo), "global": self.field.is_global},
            "projection_method": self.method, "activation_rules": dict(self.activation_rules),
            "arrays": {"top.npy": "projections (maps, k, C, fh, fw) float32, window at window_origin",
                       "input.npy": "preprocessed input in the same windows, zero outside the image"},
            "array_shape": shape, "one_entry_per_image": True, "maps": maps,
        }

    def _channel_name(self, j: int) -> str:
        digits = max(3, len(str(int(self.channels.max())))) if len(self.channels) else 3
        return f"ch{int(self.channels[j]):0{digits}d}"

    def _repr_lines(self) -> list[str]:
        found = int((self.image_index >= 0).sum())
        lines = [f"TopK: top-{self.k} of {len(self.channels)} {self.name} feature maps over {self.images_seen} images"
                 f" ({found} entries), input {self.image_hw[0]}x{self.image_hw[1]}"]
        if len(self.channels):
            best = self.activation[:, 0].nan_to_num(float("-inf"))
            j = int(best.argmax())
            lines.append(f"  strongest: map {int(self.channels[j])}, activation {float(best[j]):.4g} in image "
                         f"{int(self.image_index[j, 0])}; weakest map's best {float(best.min()):.4g}")
        lines.append(f"  projections {shape_text(self.projections)}, patches {shape_text(self.patches)}"
                     + ("" if self.projections is not None else " (ranking only: project=False)"))
        return lines

    def _figures(self) -> dict:
        from introspect_deconv.figure import channel_figure, overview_figure

        names = ["overview"] + [self._channel_name(j) for j in range(len(self.channels))]
        if self.patches is None:
            why = ("the top-k figures need the projections and patches, which were not computed: "
                   "run top_k with project=True")
            return {name: why for name in names}
        out = {"overview": lambda: overview_figure(self)}
        out.update({self._channel_name(j): (lambda j=j: channel_figure(self, j)) for j in range(len(self.channels))})
        return out

    def save(self, out) -> list[Path]:
        """Write ``top.npy``, ``input.npy``, ``top.json``, ``overview.png`` and one
        ``channels/chNNN.png`` per map into folder ``out`` (or an open ``OutputDir``), all or nothing.
        Returns the paths written."""
        from introspect.plugin import output_folder, written

        with output_folder(out) as od:
            names = self._write(od)
        return written(od, names)

    def _write(self, od) -> list[str]:
        from introspect_deconv.figure import channel_figure, overview_figure

        names = []
        if self.projections is not None:
            od.save_npy("top.npy", self.projections.float().numpy())
            names.append("top.npy")
        if self.patches is not None:
            od.save_npy("input.npy", self.patches.float().numpy())
            names.append("input.npy")
        od.save_json("top.json", self.to_dict())
        if self.patches is None:  # ranking only (project=False): no pictures to draw
            return names + ["top.json"]
        od.save_png("overview.png", overview_figure(self))
        for j in range(len(self.channels)):
            name = f"channels/{self._channel_name(j)}.png"
            od.save_png(name, channel_figure(self, j))
            names.append(name)
        return names + ["top.json", "overview.png"]


# --------------------------------------------------------------------------------------------------
# arguments
# --------------------------------------------------------------------------------------------------
def _channel_list(channels, n_maps: int, name: str) -> torch.Tensor:
    chosen = check_channels(channels, n_maps, name, "every map")
    return torch.arange(n_maps) if chosen is None else torch.tensor(sorted(set(chosen)), dtype=torch.int64)


# --------------------------------------------------------------------------------------------------
# the two passes
# --------------------------------------------------------------------------------------------------
def shard_indices(total: int, batch_size: int, rank: int, world: int) -> list[int]:
    """The images process ``rank`` of ``world`` mines: every ``world``-th batch of the global
    batches ``0..batch_size-1, batch_size..`` (batch ``b`` goes to rank ``b % world``), so each
    image is in the same batch as in a one-process run and its activations are bit for bit the same.

    Example:
        >>> shard_indices(10, 2, 1, 2)
        [2, 3, 6, 7]
    """
    return [n for first in range(rank * batch_size, total, world * batch_size)
            for n in range(first, min(first + batch_size, total))]


def mine(model: nn.Module, dataset, layer, k: int = 9, *, channels=None, batch_size: int = 32,
         workers: int = 0, limit: int | None = None, progress: Progress | None = None,
         shard: tuple[int, int] | None = None):
    """The streaming pass alone: ``(RunningTopK, images_seen, input_shape)``; see :func:`top_k`.

    ``shard=(rank, world)`` streams only that process's share of the (first ``limit``) images,
    :func:`shard_indices`, keeping their data-set indices; an empty share still reads image 0 once
    (not counted) to learn the layer's shape, so every process returns tensors of the same shape.
    """
    name, _ = resolve_layer(model, layer)
    total = dataset_size(dataset, limit)
    if total == 0:
        raise IntrospectError("the data set is empty; add images")
    indices = None if shard is None else shard_indices(total, batch_size, *shard)
    todo = total if indices is None else len(indices)
    device = model_device(model)
    running, seen, shape = None, 0, None
    with eval_mode(model), torch.no_grad(), attach(model, [name]) as rec:
        batches = (dataset_batches(dataset, batch_size, workers=workers, limit=limit, indices=indices) if todo
                   else iter([dataset_image(dataset, 0)[None]]))
        for x in batches:
            x = x.to(device, non_blocking=True)
            with readable_errors(x):
                rec.forward(x, stop=True)
            act = rec.activations.get(name)
            if act is None:
                raise IntrospectError(f"layer {name!r} did not run in the forward pass; choose another layer")
            if running is None:
                running = RunningTopK(_channel_list(channels, act.shape[1], display_name(model, name)), k)
                shape = tuple(x.shape[1:])
            if not todo:  # the probe of an empty share
                break
            ids = None if indices is None else torch.tensor(indices[seen:seen + x.shape[0]], dtype=torch.int64)
            running.update(act, seen, images=ids)
            seen += x.shape[0]
            if progress is not None:
                progress("mine", seen, todo)
    return running, seen, shape


@notebook_progress
def top_k(model: nn.Module, dataset, *, layer: str | nn.Module | None = None, k: int = 9,
          channels: int | Sequence[int] | None = None, batch_size: int = 32, workers: int = 0,
          project: bool = True, method: str = "auto", limit: int | None = None,
          progress: Progress | None = None, distributed: bool | None = None) -> TopK:
    """The top-k activations of each feature map over a data set, projected to pixel space.

    Streams ``dataset`` once (a forward pass truncated at ``layer``, no gradients) keeping, per
    feature map, the ``k`` images with the strongest activation anywhere in the map (one entry per
    image: its strongest position). Then re-reads only the winning images, projects each winner with
    the deconvnet (only the winning activation kept, as in the paper's Fig. 2) and cuts the matching
    receptive-field patch of the input.

    On several processes (a ``torch.distributed`` process group, e.g. under ``torchrun``; see
    :mod:`introspect_deconv.distributed`) every rank calls ``top_k`` with the same arguments and
    streams only its share of the data set (every ``world``-th batch); the running top-k are merged
    exactly (the result equals a one-process run's, ties included). Every rank gets the merged
    ranking (``activation``, ``image_index``, ``position``, ``boxes``, ``images_seen`` of all
    ranks); only rank 0 re-reads the winning images and computes ``projections`` and ``patches``
    (None on the other ranks), so rank 0 must be able to read every image. With NCCL, call
    ``torch.cuda.set_device(local_rank)`` before ``top_k`` (the merge runs on the current GPU).

    Args:
        model (nn.Module): any convnet; it runs in eval mode (module flags restored afterwards).
        dataset: a map-style data set giving image tensors or ``(image, label)`` pairs (e.g.
            :class:`introspect.images.ImageFolderDataset`), or an ``(N, C, H, W)`` tensor.
        layer (str | nn.Module | None): the layer; default the last ``Conv2d``.
        k (int): winners per map (default 9).
        channels (int | sequence of int | None): the maps to mine; default all.
        batch_size (int): images per forward pass (default 32).
        workers (int): ``DataLoader`` worker processes for reading images (default 0).
        project (bool): compute projections and patches (default True); False keeps only the
            ranking.
        method (str): projection path, ``"auto"``, ``"chain"`` or ``"autograd"`` (see :func:`project`).
        limit (int | None): use only the first ``limit`` images (of the whole data set).
        progress (callable | None): ``progress(phase, done, total)`` after each batch, ``phase``
            ``"mine"`` (images streamed, of this rank's share) or ``"project"`` (winning images
            projected).
        distributed (bool | None): None (default): shard over the default process group when one is
            initialized with more than one process (then every rank must call ``top_k``); True:
            require one; False: ignore it and mine the whole data set in this process (use it when
            calling ``top_k`` on one rank only, e.g. inside ``if rank == 0:`` of a training script).

    Returns:
        TopK: rankings ``(M, k)``, projections and patches ``(M, k, C, fh, fw)``.

    Example:
        >>> from introspect.images import ImageFolderDataset, Preprocess
        >>> data = ImageFolderDataset("val/", Preprocess.from_meta(model.introspect_meta))
        >>> top = introspect.top_k(model, data, layer="conv5", k=9)
        >>> top.image_index[17]            # the 9 images where map 17 of conv5 is strongest
        >>> top.save("out/top")            # overview.png, channels/ch017.png, top.json, top.npy
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise IntrospectError(f"k must be a positive integer, got {k!r}; e.g. 9")
    if batch_size < 1 or workers < 0:
        raise IntrospectError(f"batch_size must be >= 1 and workers >= 0, got {batch_size} and {workers}")
    group = group_of(distributed)
    name, _ = resolve_layer(model, layer if layer is not None else last_conv_layer(model))
    options = dict(channels=channels, batch_size=batch_size, workers=workers, limit=limit, progress=progress)
    if group is None:
        running, seen, shape = mine(model, dataset, name, k, **options)
    else:
        running, seen, shape = _mine_shard(model, dataset, name, k, group, options)
    image_hw = tuple(shape[1:])
    field = layer_field(model, name, shape)
    frame = Frame.of(field, image_hw, "max")
    m = len(running.channels)
    boxes = receptive_boxes(field, running.positions.view(-1, 2), image_hw).view(m, k, 4)
    origins = frame.origins(running.positions.view(-1, 2)).view(m, k, 2)
    meta = meta_of(model)
    result = TopK(
        layer=name, name=display_name(model, name), k=k, channels=running.channels,
        activation=running.values, image_index=running.images, position=running.positions,
        boxes=boxes, origins=origins, projections=None, patches=None, field=field, image_hw=image_hw,
        images_seen=seen, mean=tuple(meta.mean), std=tuple(meta.std),
    )
    paths = getattr(dataset, "paths", None)
    if paths is not None:
        result.image_names = {n: str(paths[n]) for n in sorted(set(running.images.view(-1).tolist())) if n >= 0}
    if project and (group is None or group.rank == 0):
        _project_winners(model, dataset, result, frame, shape, batch_size, method, progress)
    return result


def _mine_shard(model, dataset, name: str, k: int, group: Group, options: dict):
    """:func:`mine` of this rank's share, then the exact merge of every rank's running top-k."""
    error, found = None, None
    try:
        found = mine(model, dataset, name, k, shard=(group.rank, group.world), **options)
    except Exception as exc:  # the other ranks must hear of it, or they wait at the merge
        error = exc
    check_ranks(error, "waiting for every rank to finish mining")
    running, seen, shape = found
    running, seen = gather_top_k(running, seen)
    return running, seen, shape


def _project_winners(model, dataset, result: TopK, frame: Frame, shape, batch_size: int, method: str,
                     progress: Progress | None, patches: bool = True) -> None:
    """Fill ``result.projections`` (and ``result.patches`` unless ``patches`` is False): the
    winners' images in batches, one forward pass and one deconvnet walk per batch."""
    m, k = result.image_index.shape
    c_in = shape[0]
    result.projections = torch.zeros(m, k, c_in, *frame.size)
    projections = result.projections.view(m * k, c_in, *frame.size)
    if patches:
        result.patches = torch.zeros(m, k, c_in, *frame.size)
        patch_rows = result.patches.view(m * k, c_in, *frame.size)
    flat = result.image_index.view(-1).tolist()
    winners = sorted(set(flat) - {-1})
    device = model_device(model)
    done, first, group_size = 0, 0, batch_size
    while first < len(winners):
        group = winners[first:first + group_size]
        local = {n: i for i, n in enumerate(group)}
        x = torch.stack([dataset_image(dataset, n) for n in group]).to(device)
        net = Deconvnet(model, x, result.layer, method)
        result.method = net.method
        result.activation_rules.update(net.activation_rules)
        if net.method == "autograd" and len(group) > 1:
            # each batched backward pass runs over the whole batch, but an image wins only some
            # maps: one image per forward pass keeps every backward pass fully used
            group_size = 1
            continue
        first += len(group)
        slots = torch.tensor([s for s, n in enumerate(flat) if n in local], dtype=torch.int64)
        j, r = slots // k, slots % k
        image_index = torch.tensor([local[flat[s]] for s in slots.tolist()], dtype=torch.int64)
        _, origins = net.windows(image_index, result.channels[j], frame, mode="max", position=result.position[j, r],
                                 out=projections, out_index=slots)
        if patches:
            patch_rows[slots] = cut_windows(x.detach().float().cpu(), image_index, origins, frame.size)
        done += len(group)
        if progress is not None:
            progress("project", done, len(winners))


__all__ = ["TopK", "RunningTopK", "top_k", "mine", "shard_indices"]
