"""The features of each layer of a frozen model, one forward pass per batch of images.

The paper (Sec. 5.2) keeps the ImageNet-trained layers fixed and reads the output of a layer as the
feature vector of an image. Here every chosen layer is recorded in the same pass
(:func:`introspect.attach`; the pass stops at the last one), flattened, optionally rectified (the
paper's Caffe features are read after the in-place ReLU), and large convolutional maps are reduced by
adaptive average pooling (see :func:`pool_size`). The model runs in eval mode under
``torch.no_grad()``; its weights and train/eval flags are left as they were.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from introspect.plugin import (
    IntrospectError,
    alias_of,
    aliases,
    attach,
    dataset_batches,
    eval_mode,
    model_device,
    resolve_layer,
)
from introspect_generalization.sampling import is_pair

#: The paper's layers 1..7 (Table 7 rows), by their aliases on the bundled ZFNet/AlexNet models.
PAPER_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")
#: Largest flattened feature size kept as it is when ``pool`` is not given (see :func:`pool_size`).
MAX_DIM = 16384
#: The name of the raw-pixel baseline row.
PIXELS = "pixels"


@dataclass
class LayerSpec:
    """One probed layer: ``name`` (canonical module name, or ``pixels``), ``alias`` (``conv1``), the
    recorded ``shape`` of one image's output, the ``pool`` side used (``None``: not pooled) and the
    flattened feature ``dim``."""

    name: str
    alias: str | None
    shape: tuple[int, ...] = ()
    pool: int | None = None
    dim: int = 0

    @property
    def title(self) -> str:
        return self.alias or self.name


def default_layers(model: nn.Module) -> list[str]:
    """The paper's layers 1..7 (``conv1``..``conv5``, ``fc6``, ``fc7``) where the model has those
    aliases; otherwise every ``Conv2d`` and ``Linear`` layer except the last (the output layer)."""
    table, modules = aliases(model), dict(model.named_modules())
    found = [a for a in PAPER_LAYERS if table.get(a) in modules]
    if found:
        return found
    found = [n for n, m in modules.items() if n and isinstance(m, (nn.Conv2d, nn.Linear))]
    if not found:
        raise IntrospectError("the model has no Conv2d or Linear layer to probe; pass layers=[...] (--layer)")
    return found[:-1] if len(found) > 1 else found


def resolve_layers(model: nn.Module, layers: Sequence[str | nn.Module] | None, pixels: bool) -> list[LayerSpec]:
    """:class:`LayerSpec` of each requested layer (default :func:`default_layers`), the pixel
    baseline first when ``pixels``; duplicates are dropped."""
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    requested = default_layers(model) if layers is None or len(layers) == 0 else list(layers)
    specs = [LayerSpec(PIXELS, None)] if pixels else []
    for layer in requested:
        name, _ = resolve_layer(model, layer)
        if name not in [s.name for s in specs]:
            specs.append(LayerSpec(name, alias_of(model, name)))
    return specs


def pool_size(shape: Sequence[int], pool: int | None = None, max_dim: int = MAX_DIM) -> int | None:
    """The side ``P`` of the adaptive average pooling of a ``C x H x W`` map (``None``: none).

    With ``pool`` given, maps larger than ``pool x pool`` are pooled to it. Otherwise a map is kept
    whole while ``C * H * W <= max_dim``, else pooled to the largest ``P x P`` with ``C * P * P <=
    max_dim`` (at least 1 x 1). Outputs that are not ``C x H x W`` (fully connected) are never pooled.

    Example:
        >>> pool_size((96, 110, 110)), pool_size((16, 32, 32)), pool_size((16, 32, 32), pool=4)
        (13, None, 4)
    """
    if len(shape) != 3:
        return None
    c, h, w = shape
    if pool is not None:
        return pool if pool < max(h, w) else None
    if c * h * w <= max_dim:
        return None
    return max(1, min(h, w, int(math.isqrt(max_dim // c))))


def _flatten(value: torch.Tensor, spec: LayerSpec, rectify: bool) -> torch.Tensor:
    if rectify and spec.name != PIXELS:
        value = value.clamp(min=0)
    if spec.pool is not None:
        value = F.adaptive_avg_pool2d(value, spec.pool)
    return value.reshape(len(value), -1).float()


def extract(model: nn.Module, data, index: torch.Tensor, specs: list[LayerSpec], *, batch_size: int = 64,
            rectify: bool = True, pool: int | None = None, max_dim: int = MAX_DIM,
            progress: Callable[[int], None] | None = None) -> list[torch.Tensor]:
    """The features of images ``index`` of ``data`` at every layer of ``specs`` (filled in: shape,
    pool, dim), as ``len(index) x dim`` float32 CPU tensors, in the order of ``specs``."""
    device = model_device(model)
    names = [s.name for s in specs if s.name != PIXELS]
    out: list[list[torch.Tensor]] = [[] for _ in specs]
    with eval_mode(model), torch.no_grad(), contextlib.ExitStack() as stack:
        rec = stack.enter_context(attach(model, names)) if names else None
        for x in dataset_batches(data[0] if is_pair(data) else data, batch_size, indices=index):
            x = x.to(device)
            if rec is not None:
                rec.forward(x, stop=True)
            for i, spec in enumerate(specs):
                value = x if spec.name == PIXELS else rec[spec.name]
                if not spec.shape:
                    spec.shape = tuple(value.shape[1:])
                    spec.pool = pool_size(spec.shape, pool, max_dim)
                out[i].append(_flatten(value, spec, rectify).cpu())
            if progress is not None:
                progress(len(x))
    feats = [torch.cat(parts) for parts in out]
    for spec, f in zip(specs, feats):
        spec.dim = f.shape[1]
    return feats


def standardize(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Subtract the training mean and divide by the training standard deviation, per feature;
    features constant on the training set become 0."""
    mean = train.mean(0)
    std = train.std(0, unbiased=False)
    std = torch.where(std > 1e-6 * std.max().clamp(min=1e-30), std, torch.full_like(std, math.inf))
    return [(t - mean) / std for t in (train, *others)]


__all__ = ["PAPER_LAYERS", "MAX_DIM", "PIXELS", "LayerSpec", "default_layers", "resolve_layers", "pool_size",
           "extract", "standardize"]
