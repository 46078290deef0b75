"""The paper's training recipe (Zeiler & Fergus, Sec. 3): its hyper-parameters and pieces.

Stochastic gradient descent on mini-batches of 128 with momentum 0.9 and learning rate 1e-2, lowered
by hand (:class:`LRSchedule` ``steps``, or a lower learning rate when resuming) or when the monitored
loss stops improving (``plateau``); dropout 0.5 in the fully connected layers (the architecture's own);
weights drawn from N(0, 1e-2) and biases set to 0 (:func:`init_paper`); after every step, each
convolutional filter whose RMS exceeds a fixed radius of 1e-1 is scaled back to that radius
(:func:`renormalize_filters`). :class:`TrainConfig` holds the settings; :func:`build_model` builds an
architecture for an input size (fitting ZFNet's ``pool5_size``) with the paper's initialization.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from introspect.errors import IntrospectError

#: The paper's hyper-parameters.
PAPER_LR = 1e-2
PAPER_MOMENTUM = 0.9
PAPER_BATCH_SIZE = 128
PAPER_INIT_STD = 1e-2
PAPER_FILTER_RADIUS = 1e-1


# --------------------------------------------------------------------------------------------------
# the recipe's pieces
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def renormalize_filters(model: nn.Module, radius: float = PAPER_FILTER_RADIUS) -> int:
    """Scale every ``nn.Conv2d`` filter whose RMS exceeds ``radius`` back to RMS ``radius``, in place.

    A filter is one output channel's weights (``in_channels/groups x kH x kW``); its RMS is
    ``sqrt(mean(w ** 2))``. Filters at or under the radius are left exactly as they are (bit for bit);
    biases are never touched. The paper applies this after every update (Sec. 3).

    Args:
        model (nn.Module): the network; every ``nn.Conv2d`` in it (subclasses included) is visited.
        radius (float): the fixed radius (default 0.1, the paper's).

    Returns:
        int: how many filters were scaled.

    Example:
        >>> conv = nn.Conv2d(1, 2, 3)
        >>> with torch.no_grad():
        ...     conv.weight.fill_(1.0)
        >>> renormalize_filters(conv)
        2
        >>> float(conv.weight.pow(2).mean().sqrt())
        0.1
    """
    if not radius > 0:
        raise IntrospectError(f"the filter radius must be positive, got {radius}; the paper uses 0.1")
    scaled = 0
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            w = module.weight
            rms = w.detach().pow(2).flatten(1).mean(1).sqrt()
            over = rms > radius
            if bool(over.any()):
                scale = torch.where(over, radius / rms.clamp_min(1e-30), torch.ones_like(rms))
                w.mul_(scale.view(-1, *([1] * (w.dim() - 1))))
                scaled += int(over.sum())
    return scaled


@torch.no_grad()
def init_paper(model: nn.Module, std: float = PAPER_INIT_STD, generator: torch.Generator | None = None) -> nn.Module:
    """Draw every ``nn.Conv2d`` and ``nn.Linear`` weight from N(0, ``std``) and set their biases to 0.

    Args:
        model (nn.Module): the network (changed in place).
        std (float): standard deviation of the weights (default 1e-2, the paper's).
        generator (torch.Generator | None): random source (default: torch's global one).

    Returns:
        nn.Module: ``model``.

    Example:
        >>> net = init_paper(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 2)))
        >>> float(net[2].bias.abs().sum())
        0.0
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            w = module.weight
            w.copy_(torch.randn(w.shape, generator=generator, dtype=w.dtype).mul_(std).to(w.device))
            if module.bias is not None:
                module.bias.zero_()
    return model


@torch.no_grad()
def tie_input_channels(model: nn.Module) -> nn.Module:
    """Give the first convolution the same weights for every input channel (for grey data fed as RGB).

    When every training image is grey replicated to three channels, the gradient of the first
    layer's weights is the same for each input channel, so weights that start equal stay equal: the
    filters are grey, respond to brightness only (also on colour photographs), and their deconvnet
    projections are grey. Independently drawn channels would instead keep an untrained random
    difference between channels forever. The shared weights are the first channel's divided by
    ``sqrt(C)``, so the filter's response to grey input has the same spread as before.

    Args:
        model (nn.Module): the network (changed in place); its first ``nn.Conv2d`` is tied.

    Returns:
        nn.Module: ``model``.

    Example:
        >>> net = tie_input_channels(init_paper(zfnet(num_classes=10)))
        >>> bool((net.features[0].weight[:, 0] == net.features[0].weight[:, 2]).all())
        True
    """
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is not None and conv.weight.shape[1] > 1:
        w = conv.weight
        w.copy_((w[:, :1] / math.sqrt(w.shape[1])).expand_as(w))
    return model


class LRSchedule:
    """The learning rate: lowered by hand at given epochs, and/or when a loss stops improving.

    Args:
        lr (float): the starting learning rate (default 1e-2).
        steps (sequence of int): multiply the rate by ``gamma`` after each of these epochs (1-based:
            ``steps=(8,)`` trains epochs 1-8 at ``lr`` and epoch 9 on at ``lr * gamma``).
        gamma (float): the factor (default 0.1).
        plateau (bool): also multiply by ``gamma`` when the monitored loss has not improved (by a
            relative ``threshold``) for more than ``patience`` epochs (default False).
        patience (int): epochs without improvement tolerated (default 2).
        threshold (float): relative improvement that counts (default 1e-4).
        min_lr (float): the rate never goes below this (default 1e-6).

    Example:
        >>> s = LRSchedule(0.01, steps=(2,))
        >>> [s.step(epoch) for epoch in (1, 2, 3)]
        [0.01, 0.001, 0.001]
    """

    def __init__(self, lr: float = PAPER_LR, steps: Sequence[int] = (), gamma: float = 0.1, plateau: bool = False,
                 patience: int = 2, threshold: float = 1e-4, min_lr: float = 1e-6) -> None:
        self.lr = float(lr)
        self.steps = sorted(int(s) for s in steps)
        self.gamma = float(gamma)
        self.plateau = bool(plateau)
        self.patience = int(patience)
        self.threshold = float(threshold)
        self.min_lr = float(min_lr)
        self.best = math.inf
        self.bad_epochs = 0

    def step(self, epoch: int, loss: float | None = None) -> float:
        """Account for the end of ``epoch`` (with its monitored ``loss``); returns the next epoch's rate."""
        if epoch in self.steps:
            self.lr = max(self.lr * self.gamma, self.min_lr)
        if self.plateau and loss is not None and math.isfinite(loss):
            if loss < self.best * (1 - self.threshold):
                self.best, self.bad_epochs = float(loss), 0
            else:
                self.bad_epochs += 1
                if self.bad_epochs > self.patience:
                    self.lr = max(self.lr * self.gamma, self.min_lr)
                    self.bad_epochs = 0
        return self.lr

    def state_dict(self) -> dict:
        """Plain numbers and lists (safe for ``torch.load(weights_only=True)``)."""
        return {"lr": self.lr, "steps": list(self.steps), "gamma": self.gamma, "plateau": self.plateau,
                "patience": self.patience, "threshold": self.threshold, "min_lr": self.min_lr,
                "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.lr = float(state["lr"])
        self.steps = sorted(int(s) for s in state.get("steps", []))
        for key in ("gamma", "threshold", "min_lr", "best"):
            if key in state:
                setattr(self, key, float(state[key]))
        self.plateau = bool(state.get("plateau", False))
        self.patience = int(state.get("patience", 2))
        self.bad_epochs = int(state.get("bad_epochs", 0))


@dataclass
class TrainConfig:
    """The recipe's settings (defaults: the paper's).

    Attributes:
        epochs (int): train until this epoch (1-based, total; default 10).
        batch_size (int): mini-batch size (128).
        lr (float): starting learning rate (1e-2).
        momentum (float): SGD momentum (0.9).
        weight_decay (float): L2 penalty (0: the paper names none).
        lr_steps (tuple[int, ...]): epochs after which the rate is multiplied by ``lr_gamma``.
        lr_gamma (float): the factor (0.1).
        plateau (bool): also lower the rate when the monitored loss (validation, else training)
            stops improving for more than ``patience`` epochs.
        patience (int): see ``plateau`` (2).
        filter_radius (float): filter RMS radius (0.1); 0 turns renormalization off.
        crop_pad (int): random-crop margin per side in pixels (the paper's 256 -> 224 crops are
            ``H // 14``; 0: no crops).
        flip (bool): random horizontal flips (True).
        seed (int): seeds the initialization, shuffling, crops, flips and dropout (0).
        workers (int): data-loading processes for image folders (0: in the main process).
        init_std (float): weights start from N(0, ``init_std``) (1e-2); the caller initializes
            (:func:`init_paper`), this records it.
        val_split (float): fraction of the training data the caller held out for validation (0);
            recorded.
        tie_channels (bool): the caller tied the first layer's input channels
            (:func:`tie_input_channels`, for grey data fed as RGB); recorded.
    """

    epochs: int = 10
    batch_size: int = PAPER_BATCH_SIZE
    lr: float = PAPER_LR
    momentum: float = PAPER_MOMENTUM
    weight_decay: float = 0.0
    lr_steps: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    plateau: bool = False
    patience: int = 2
    filter_radius: float = PAPER_FILTER_RADIUS
    crop_pad: int = 0
    flip: bool = True
    seed: int = 0
    workers: int = 0
    init_std: float = PAPER_INIT_STD
    val_split: float = 0.0
    tie_channels: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lr_steps"] = list(self.lr_steps)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "lr_steps" in known:
            known["lr_steps"] = tuple(int(s) for s in known["lr_steps"])
        return cls(**known)

    def check(self) -> None:
        """Raise :class:`IntrospectError` for settings that cannot train."""
        problems = [
            (self.epochs < 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size < 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (not self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (not 0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay < 0, f"--weight-decay must be >= 0, got {self.weight_decay}"),
            (self.filter_radius < 0, f"--filter-radius must be >= 0, got {self.filter_radius}"),
            (self.crop_pad < 0, f"--crop-pad must be >= 0, got {self.crop_pad}"),
            (self.workers < 0, f"--workers must be >= 0, got {self.workers}"),
            (any(s < 1 for s in self.lr_steps), f"--lr-steps are epochs (1 or more), got {list(self.lr_steps)}"),
        ]
        for bad, message in problems:
            if bad:
                raise IntrospectError(message + "; fix the option")



def build_model(arch: str, arch_kwargs: dict, input_size: Sequence[int], *, seed: int = 0,
                init_std: float | None = PAPER_INIT_STD, tie: bool = False) -> tuple[nn.Module, dict]:
    """Build architecture ``arch`` for ``(C, H, W)`` inputs, initialized with the paper's recipe.

    When the network does not run on ``input_size`` and ``arch_kwargs`` leaves ``pool5_size`` open, the
    size its ``features`` give is tried as ``pool5_size`` (ZFNet on 64 x 64 Fashion-MNIST, for one).

    Args:
        arch (str): a registered architecture (see ``introspect models``).
        arch_kwargs (dict): builder arguments.
        input_size (sequence of 3 int): ``(C, H, W)`` the model will take.
        seed (int): seeds the build and the initialization (default 0).
        init_std (float | None): weights from N(0, ``init_std``), biases 0 (:func:`init_paper`);
            None keeps the builder's initialization (a checkpoint's weights come next).
        tie (bool): grey first-layer filters (:func:`tie_input_channels`), for grey data fed as RGB.

    Returns:
        tuple: ``(model, arch_kwargs)``, the latter with ``pool5_size`` when it was fitted.

    Raises:
        IntrospectError: the inputs do not fit the architecture.

    Example:
        >>> model, kwargs = build_model("zfnet", {"num_classes": 10}, (3, 64, 64))
        >>> kwargs["pool5_size"]
        1
    """
    from introspect.models import get_arch

    spec = get_arch(arch)
    size = tuple(int(v) for v in input_size)
    torch.manual_seed(seed)
    model = spec.build(**arch_kwargs)
    problem = _dry_run(model, size)
    if problem and "pool5_size" not in arch_kwargs and hasattr(model, "features"):
        fitted = _fit_pool5(spec, model, arch_kwargs, size)
        if fitted is not None:
            arch_kwargs = fitted
            torch.manual_seed(seed)
            model, problem = spec.build(**arch_kwargs), None
    if problem:
        raise IntrospectError(
            f"a {'x'.join(map(str, size))} input does not fit architecture {arch!r} ({problem}); "
            "choose another --input-size or architecture options"
        )
    if init_std is not None:
        init_paper(model, init_std, generator=torch.Generator().manual_seed(seed))
        if tie:
            tie_input_channels(model)
    return model, arch_kwargs


def _fit_pool5(spec: Any, model: nn.Module, arch_kwargs: dict, input_size: tuple[int, ...]) -> dict | None:
    """``arch_kwargs`` with the ``pool5_size`` that ``model.features`` gives for ``input_size``, if that runs."""
    net: Any = model
    with torch.no_grad():
        try:
            size = net.features(torch.zeros(1, *input_size)).shape[-1]
        except RuntimeError:
            return None
    if not size:
        return None
    try:
        candidate = spec.build(**arch_kwargs, pool5_size=int(size))
    except IntrospectError:
        return None
    if _dry_run(candidate, input_size) is not None:
        return None
    return {**arch_kwargs, "pool5_size": int(size)}


def _dry_run(model: nn.Module, input_size: tuple[int, ...]) -> str | None:
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, *input_size))
    except (RuntimeError, ValueError) as exc:
        return str(exc).strip().splitlines()[0][:160]
    return None


__all__ = [
    "PAPER_LR", "PAPER_MOMENTUM", "PAPER_BATCH_SIZE", "PAPER_INIT_STD", "PAPER_FILTER_RADIUS",
    "renormalize_filters", "init_paper", "tie_input_channels", "LRSchedule", "TrainConfig", "build_model",
]
