"""``feature_evolution(checkpoints, dataset, ...)``: the strongest activation of chosen feature maps at
every epoch of a training run, projected to pixel space (the paper's Fig. 4).

Zeiler & Fergus (Sec. 4, Fig. 4) follow a few feature maps of each layer through training: at each
epoch, the strongest activation of the map over all training examples is projected down with the
deconvnet. Here every checkpoint is streamed over the data set with :func:`introspect.top_k`
(``k=1``); its winner -- value, image, position, receptive-field box -- and its projection fill one
column. Rows are the feature maps, columns the epochs.
"""
from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from introspect.plugin import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Field,
    IntrospectError,
    Progress,
    Shown,
    display_name,
    last_conv_layer,
    meta_of,
    notebook_progress,
    report_progress,
    require_method,
    resolve_layer,
    shape_text,
    short_list,
)
from introspect_evolution.checkpoints import check_same, gather, signature_of
from introspect_evolution.defaults import DEFAULT_MAPS  # noqa: E402  (maps followed per layer)

#: A data set whose images fit in this many bytes is read once and kept in memory (every checkpoint and
#: layer streams it again); a larger one is read again for each pass.
IN_MEMORY_BYTES = 256 * 2 ** 20

# --------------------------------------------------------------------------------------------------
# the result
# --------------------------------------------------------------------------------------------------
@dataclass
class LayerEvolution:
    """The strongest activation of ``M`` feature maps of one layer at each of ``E`` epochs (CPU tensors).

    Attributes:
        layer (str): canonical module name; ``name`` the paper's alias (``conv5``) when it has one.
        channels (Tensor): ``(M,)`` int64, the feature maps (rows), in the order given or chosen.
        selection (str): ``"given"``, or how the maps were chosen (``"strongest at epoch 13"``).
        activation (Tensor): ``(M, E)`` float32, the strongest activation of each map over the data
            set at each epoch.
        image_index (Tensor): ``(M, E)`` int64, the data-set index of the image where it occurs.
        position (Tensor): ``(M, E, 2)`` int64 ``(y, x)`` of it on the feature map.
        boxes (Tensor): ``(M, E, 4)`` int64 receptive-field box ``(y0, x0, y1, x1)`` in input pixels,
            clipped to the image.
        origins (Tensor): ``(M, E, 2)`` int64 input position of the corner of each projection window.
        projections (Tensor): ``(M, E, C, fh, fw)`` float32 deconvnet projection of that single
            activation, in a window the size of the receptive field (the whole image when smaller)
            whose corner is at ``origins``.
        field (Field): the layer's receptive field.
    """

    layer: str
    name: str
    channels: torch.Tensor
    selection: str
    activation: torch.Tensor
    image_index: torch.Tensor
    position: torch.Tensor
    boxes: torch.Tensor
    origins: torch.Tensor
    projections: torch.Tensor
    field: Field

    def frame_box(self, j: int, e: int) -> list[int]:
        """The receptive box of map ``j`` at epoch column ``e`` in the coordinates of its window."""
        y0, x0, y1, x1 = self.boxes[j, e].tolist()
        oy, ox = self.origins[j, e].tolist()
        return [y0 - oy, x0 - ox, y1 - oy, x1 - ox]

    def mean_activation(self) -> list[float]:
        """Per epoch, the strongest activation averaged over the maps."""
        return [float(v) for v in self.activation.mean(0)]

    def same_image_as_last(self) -> list[float]:
        """Per epoch, the fraction of maps whose strongest image is the one of the last epoch."""
        return [float(v) for v in (self.image_index == self.image_index[:, -1:]).float().mean(0)]

    def to_dict(self, epochs: Sequence[int], image_names: dict[int, str] | None = None) -> dict:
        """JSON-ready: every map's winner at every epoch, and the two summaries per epoch."""
        maps = []
        for j, channel in enumerate(self.channels.tolist()):
            rows = []
            for e, epoch in enumerate(epochs):
                n = int(self.image_index[j, e])
                row = {"epoch": int(epoch), "activation": float(self.activation[j, e]), "image": n,
                       "position": self.position[j, e].tolist(), "box": self.boxes[j, e].tolist(),
                       "window_origin": self.origins[j, e].tolist()}
                if image_names and n in image_names:
                    row["image_name"] = image_names[n]
                rows.append(row)
            maps.append({"channel": channel, "epochs": rows})
        return {"layer": self.layer, "name": self.name, "selection": self.selection,
                "channels": self.channels.tolist(),
                "field": {"size": list(self.field.size), "stride": list(self.field.jump),
                          "lo": list(self.field.lo), "global": self.field.is_global},
                "projection_shape": list(self.projections.shape),
                "mean_activation": self.mean_activation(), "same_image_as_last": self.same_image_as_last(),
                "maps": maps}


@dataclass(repr=False)
class EvolutionResult(Shown):
    """Feature evolution during training (Fig. 4): per layer, rows of feature maps, columns of epochs.

    Attributes:
        epochs (list[int]): the epoch of each column (see :func:`feature_evolution`).
        sources (list[str]): the checkpoint of each column (a path, or ``"model N"``).
        layers (list[LayerEvolution]): one entry per layer, in the order given.
        images_seen (int): images in the data set.
        image_names (dict[int, str] | None): file of each winning image, by data-set index, when the
            data set has ``paths``.
        mean, std (tuple): the input normalization of the checkpoints.

    With a single layer, ``channels``, ``activation``, ``image_index``, ``position``, ``boxes``,
    ``origins`` and ``projections`` (``(M, E, C, fh, fw)``) are that layer's; ``result["conv5"]``
    picks a layer by name or alias.
    """

    epochs: list[int]
    sources: list[str]
    layers: list[LayerEvolution]
    images_seen: int
    image_names: dict[int, str] | None = None
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD

    def __getitem__(self, name: str) -> LayerEvolution:
        for entry in self.layers:
            if name in (entry.layer, entry.name):
                return entry
        raise IntrospectError(f"the result has no layer {name!r}; it has {', '.join(e.name for e in self.layers)}")

    def _only(self) -> LayerEvolution:
        if len(self.layers) != 1:
            raise IntrospectError(f"the result holds {len(self.layers)} layers; pick one with result.layers[i] "
                                  f"or result[{self.layers[0].name!r}]")
        return self.layers[0]

    channels = property(lambda self: self._only().channels, doc="``(M,)`` maps of the only layer.")
    activation = property(lambda self: self._only().activation, doc="``(M, E)`` of the only layer.")
    image_index = property(lambda self: self._only().image_index, doc="``(M, E)`` of the only layer.")
    position = property(lambda self: self._only().position, doc="``(M, E, 2)`` of the only layer.")
    boxes = property(lambda self: self._only().boxes, doc="``(M, E, 4)`` of the only layer.")
    origins = property(lambda self: self._only().origins, doc="``(M, E, 2)`` of the only layer.")
    projections = property(lambda self: self._only().projections, doc="``(M, E, C, fh, fw)`` of the only layer.")

    def _repr_lines(self) -> list[str]:
        lines = [f"EvolutionResult: {len(self.layers)} layer{'s' if len(self.layers) != 1 else ''} over "
                 f"{len(self.epochs)} checkpoints (epochs {short_list(self.epochs)}), {self.images_seen} images"]
        for entry in self.layers[:3]:
            mean = entry.mean_activation()
            lines.append(f"  {entry.name}: {len(entry.channels)} maps, mean strongest activation "
                         f"{mean[0]:.3g} -> {mean[-1]:.3g}, projections {shape_text(entry.projections)}")
        return lines

    def _figures(self) -> dict:
        from introspect_evolution.figure import evolution_figure, file_stem, layer_figure

        out = {"evolution": lambda: evolution_figure(self)}
        out.update({f"evolution_{file_stem(e.name)}": (lambda e=e: layer_figure(e, self.epochs)) for e in self.layers})
        return out

    def to_dict(self) -> dict:
        """A JSON-ready summary: epochs, checkpoints, and per layer every map's winner at every epoch."""
        return {"method": "feature_evolution", "epochs": list(self.epochs), "checkpoints": list(self.sources),
                "images_seen": self.images_seen,
                "layers": [entry.to_dict(self.epochs, self.image_names) for entry in self.layers]}

    def rows(self) -> list[dict]:
        """One row per layer, map and epoch: the table written as ``evolution.csv``."""
        out = []
        for entry in self.layers:
            for j, channel in enumerate(entry.channels.tolist()):
                for e, epoch in enumerate(self.epochs):
                    n = int(entry.image_index[j, e])
                    y, x = entry.position[j, e].tolist()
                    y0, x0, y1, x1 = entry.boxes[j, e].tolist()
                    out.append({"layer": entry.name, "map": channel, "epoch": int(epoch),
                                "activation": float(entry.activation[j, e]), "image": n,
                                "image_name": (self.image_names or {}).get(n, ""), "y": y, "x": x,
                                "box_y0": y0, "box_x0": x0, "box_y1": y1, "box_x1": x1})
        return out

    def csv(self) -> str:
        """:meth:`rows` as CSV text with a header line."""
        from introspect.plugin import csv_text

        return csv_text(self.rows())

    def save(self, out) -> list[Path]:
        """Write the figures, arrays and tables into folder ``out`` (all or nothing).

        Files: ``evolution_<layer>.png`` (rows: feature maps, columns: epochs) and
        ``evolution_<layer>.npy`` (``(M, E, C, fh, fw)`` float32 projections) per layer,
        ``evolution.png`` (every layer as a block), ``evolution.csv`` (layer, map, epoch, activation,
        image, position, box) and ``result.json``. ``out`` may be an open
        :class:`introspect.output.OutputDir`.

        Returns:
            list[Path]: the files written.
        """
        from introspect.plugin import output_folder, written

        with output_folder(out) as od:
            names = self._write(od)
        return written(od, names)

    def _write(self, od) -> list[str]:
        from introspect_evolution.figure import evolution_figure, file_stem, layer_figure

        names = []
        for entry in self.layers:
            stem = f"evolution_{file_stem(entry.name)}"
            od.save_npy(f"{stem}.npy", entry.projections.float().numpy())
            od.save_png(f"{stem}.png", layer_figure(entry, self.epochs))
            names += [f"{stem}.npy", f"{stem}.png"]
        od.save_png("evolution.png", evolution_figure(self))
        od.save_text("evolution.csv", self.csv())
        od.save_json("result.json", self.to_dict())
        return names + ["evolution.png", "evolution.csv", "result.json"]


# --------------------------------------------------------------------------------------------------
# arguments
# --------------------------------------------------------------------------------------------------
def _layer_list(layer) -> list:
    if layer is None or (isinstance(layer, (list, tuple)) and not layer):
        return [None]
    if isinstance(layer, (str, nn.Module)):
        return [layer]
    return list(layer)


def _channel_list(channels) -> list[int] | None:
    """Given maps in order, without repeats; None for the default choice."""
    if channels is None:
        return None
    if isinstance(channels, bool) or not hasattr(channels, "__iter__") or getattr(channels, "ndim", 1) == 0:
        channels = [channels]  # one map: an int (or a NumPy / 0-d tensor integer)
    out: list[int] = []
    for c in channels:
        try:
            index = operator.index(c) if not isinstance(c, bool) else -1
        except TypeError:
            index = -1
        if index < 0:
            raise IntrospectError(f"channel {c!r} is not a feature map; give non-negative integers, e.g. [0, 5]")
        if index not in out:
            out.append(index)
    if not out:
        raise IntrospectError("channels is empty; pass None to choose the maps, or at least one channel")
    return out


def _channels_per_layer(channels, model: nn.Module, names: list[str]) -> dict[str, list[int] | None]:
    """``{layer: maps or None}``: one list for every layer, or a dict keyed by layer name or alias."""
    if not isinstance(channels, dict):
        chosen = _channel_list(channels)
        return {name: chosen for name in names}
    per = {name: None for name in names}
    for key, value in channels.items():
        canonical, _ = resolve_layer(model, key)
        if canonical not in per:
            raise IntrospectError(f"channels are given for layer {key!r}, which is not among the layers analysed; "
                                  f"add it to layers=")
        per[canonical] = _channel_list(value)
    return per


def _top_k():
    """``top_k`` of the deconv plugin: feature evolution depends on it (a one-line error without it)."""
    return require_method("top_k", needed_by="feature evolution")


def strongest_maps(model: nn.Module, dataset, layer: str, maps: int, batch_size: int) -> list[int]:
    """The ``maps`` feature maps of ``layer`` with the largest single activation over ``dataset``
    (strongest first; ties: lower map first)."""
    top = _top_k()(model, dataset, layer=layer, k=1, batch_size=batch_size, project=False)
    order = torch.sort(top.activation[:, 0], descending=True, stable=True).indices[:maps]
    return top.channels[order].tolist()


def in_memory(dataset, budget: int | None = None):
    """``dataset`` as one ``(N, C, H, W)`` tensor when its images fit in ``budget`` bytes (default
    :data:`IN_MEMORY_BYTES`; each image is then read once instead of once per checkpoint and layer);
    otherwise ``dataset`` itself."""
    budget = IN_MEMORY_BYTES if budget is None else budget
    if isinstance(dataset, torch.Tensor):
        return dataset
    try:
        n = len(dataset)
    except TypeError:
        return dataset
    if n == 0:
        return dataset

    def image(i: int) -> torch.Tensor:
        item = dataset[i]
        return item[0] if isinstance(item, (tuple, list)) else item

    first = image(0)
    if not isinstance(first, torch.Tensor) or n * first.numel() * first.element_size() > budget:
        return dataset
    return torch.stack([first] + [image(i) for i in range(1, n)])


# --------------------------------------------------------------------------------------------------
# the method
# --------------------------------------------------------------------------------------------------
@notebook_progress
def feature_evolution(
    checkpoints,
    dataset,
    *,
    layers: str | nn.Module | Sequence[str] | None = None,
    channels: int | Sequence[int] | dict | None = None,
    maps: int = DEFAULT_MAPS,
    epochs: Sequence[int] | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
) -> EvolutionResult:
    """Feature evolution during training (Zeiler & Fergus 2014, Sec. 4, Fig. 4).

    The one method whose first argument is not a model: it takes the training run's checkpoints
    (a sequence of models, files or folders), then the data set, then keyword-only options.

    For every checkpoint (a column) and every chosen feature map (a row), streams ``dataset`` with
    :func:`introspect.top_k` (``k=1``) and keeps the single strongest activation of the map over
    the data set -- its value, image, position and receptive-field box -- and its deconvnet
    projection to pixel space. Models are loaded one at a time and run in eval mode under
    ``torch.no_grad()`` (except for the deconvnet's own backward pass); given models are not changed.

    Args:
        checkpoints: a folder holding ``epoch_*.pt`` files (as ``introspect train`` writes them,
            sorted by epoch -- the number, not the text of the name), or a list of checkpoint files,
            such folders and loaded ``nn.Module`` objects, used in the given order. All must share
            one architecture and input size.
        dataset: a map-style data set of preprocessed image tensors or ``(image, label)`` pairs
            (e.g. :class:`introspect.images.ImageFolderDataset`), an ``(N, C, H, W)`` tensor, or a
            function ``dataset(model)`` returning one, called once with the last checkpoint's model
            (so that images are preprocessed as the checkpoints want). A data set whose images fit in
            :data:`IN_MEMORY_BYTES` (256 MiB) is read once and kept in memory for all the passes.
        layers (str | nn.Module | sequence | None): a layer, by name or alias (``"conv5"``), or a
            list of layers (the paper shows layers 1-5 as blocks); default the last ``Conv2d``.
        channels (int | sequence of int | dict | None): the feature maps (rows), the same for every
            layer, or a dict ``{layer: maps}``; rows keep the given order. Default (None, or a layer
            left out of the dict): the ``maps`` maps with the strongest single activation over the
            data set at the last checkpoint, strongest first -- the features the training ends with
            (the paper shows a random subset; a random map of a small net may never fire).
        maps (int): how many maps to choose when ``channels`` is not given (default 8; fewer when
            the layer has fewer).
        epochs (sequence of int | None): the epoch of each checkpoint. Default: the epoch stored in
            the checkpoint (``extra["epoch"]``), else the number of a file named ``epoch_NNN.pt``,
            else the position in the list (1, 2, ...).
        batch_size (int): images per forward pass (default 32).
        device (str | torch.device): where checkpoint files are loaded (``"cpu"``, ``"cuda"``,
            ``"auto"``); loaded models run where they are.
        progress (Progress | None): ``progress("checkpoints", done, total)`` before the first
            checkpoint (``done == 0``) and after each one.

    Returns:
        EvolutionResult: per layer ``activation``, ``image_index`` ``(M, E)``, ``position``,
        ``boxes``, ``origins`` and ``projections`` ``(M, E, C, fh, fw)``.

    Raises:
        IntrospectError: no checkpoints, checkpoints of different architectures or input sizes, an
            unknown layer, a channel the layer does not have, an empty data set, a data tensor that is
            not ``(N, C, H, W)``, a checkpoint file that does not name its architecture.

    Example:
        >>> from introspect.images import ImageFolderDataset, Preprocess
        >>> model = introspect.load_model("runs/zf/epoch_001.pt")
        >>> data = ImageFolderDataset("val/", Preprocess.from_meta(model.introspect_meta))
        >>> result = introspect.feature_evolution("runs/zf", data, layers=["conv1", "conv5"], maps=6)
        >>> result["conv5"].activation.shape          # 6 maps x 13 epochs
        torch.Size([6, 13])
        >>> result.save("out/evolution")              # evolution_conv5.png, evolution.csv, result.json
    """
    if isinstance(maps, bool) or not isinstance(maps, int) or maps < 1:
        raise IntrospectError(f"maps must be a positive integer, got {maps!r}; e.g. 8")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise IntrospectError(f"batch_size must be a positive integer, got {batch_size!r}; e.g. 32")
    columns = gather(checkpoints, epochs)
    last = columns[-1].load(device)
    reference = signature_of(last)
    names: list[str] = []
    for entry in _layer_list(layers):
        name, _ = resolve_layer(last, entry if entry is not None else last_conv_layer(last))
        if name not in names:
            names.append(name)
    chosen = _channels_per_layer(channels, last, names)
    if callable(dataset) and not isinstance(dataset, (torch.Tensor, Dataset)):
        dataset = dataset(last)
    if isinstance(dataset, torch.Tensor) and dataset.dim() != 4:
        raise IntrospectError(f"a data tensor must be (N, C, H, W), got shape {tuple(dataset.shape)}; "
                              "give a batch of images (one image x as x[None])")
    paths = getattr(dataset, "paths", None)
    dataset = in_memory(dataset)
    selection = {name: "given" if chosen[name] is not None else f"strongest at epoch {columns[-1].epoch}"
                 for name in names}
    chosen = {name: given if given is not None else strongest_maps(last, dataset, name, maps, batch_size)
              for name, given in chosen.items()}
    parts = {name: [] for name in names}
    seen = 0
    report_progress(progress, "checkpoints", 0, len(columns))
    for e, column in enumerate(columns):
        model = last if e == len(columns) - 1 else column.load(device)
        check_same(columns[-1], reference, column, signature_of(model))
        for name in names:
            top = _top_k()(model, dataset, layer=name, k=1, channels=chosen[name], batch_size=batch_size)
            parts[name].append(top)
            seen = top.images_seen
        del model
        report_progress(progress, "checkpoints", e + 1, len(columns))
    meta = meta_of(last)
    return EvolutionResult(
        epochs=[int(c.epoch) for c in columns], sources=[c.source for c in columns],
        layers=[_stack(last, name, chosen[name], selection[name], parts[name]) for name in names],
        images_seen=seen, image_names=_names(paths, parts), mean=tuple(meta.mean), std=tuple(meta.std),
    )


def _stack(model: nn.Module, name: str, channels: list[int], selection: str, tops: list) -> LayerEvolution:
    """The winners of every epoch's ``TopK`` (maps sorted by number) as rows in ``channels`` order."""
    rows = [tops[0].channels.tolist().index(c) for c in channels]

    def column(attribute: str) -> torch.Tensor:
        return torch.stack([getattr(top, attribute)[rows, 0] for top in tops], dim=1)

    return LayerEvolution(
        layer=name, name=display_name(model, name), channels=torch.tensor(channels, dtype=torch.int64),
        selection=selection, activation=column("activation").float(), image_index=column("image_index"),
        position=column("position"), boxes=column("boxes"), origins=column("origins"),
        projections=column("projections").float(), field=tops[0].field,
    )


def _names(paths, parts: dict) -> dict[int, str] | None:
    if paths is None:
        return None
    used = {int(n) for tops in parts.values() for top in tops for n in top.image_index[:, 0].tolist() if n >= 0}
    return {n: str(paths[n]) for n in sorted(used)}


__all__ = ["feature_evolution", "EvolutionResult", "LayerEvolution", "strongest_maps", "in_memory", "DEFAULT_MAPS",
           "IN_MEMORY_BYTES"]
