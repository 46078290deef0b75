"""Reference models, the architecture registry and model files.

Architectures are registered by plugins through the ``register_architectures`` hook (the bundled
ZFNet, AlexNet and every torchvision classification network come from the built-in plugin
:mod:`introspect.models.builtin`). :func:`load_model` turns a model file into an ``nn.Module`` in eval
mode with its :class:`ModelMeta` attached as ``model.introspect_meta``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from introspect.errors import IntrospectError, closest
from introspect.imagenet import IMAGENET_MEAN, IMAGENET_STD
from introspect.lazy import lazy_exports

if TYPE_CHECKING:
    from torch import nn

    from introspect.models.alexnet import AlexNet as AlexNet
    from introspect.models.alexnet import alexnet as alexnet
    from introspect.models.alexnet import alexnet_torchvision as alexnet_torchvision
    from introspect.models.load import load_model as load_model
    from introspect.models.load import resolve_device as resolve_device
    from introspect.models.load import save_checkpoint as save_checkpoint
    from introspect.models.zfnet import ZFNet as ZFNet
    from introspect.models.zfnet import zfnet as zfnet


@dataclass
class ModelMeta:
    """What a model file says about its model, beyond the weights.

    Attributes:
        arch (str | None): registered architecture name (``"zfnet"``), None for a pickled module.
        arch_kwargs (dict): keyword arguments of the architecture's builder.
        classes (list[str] | None): class names, index = output unit.
        input_size (tuple[int, int, int]): ``(C, H, W)`` the model expects.
        mean, std (tuple[float, ...]): input normalization per channel.
        aliases (dict[str, str]): extra layer aliases (alias -> module name).
        source (str | None): where the model came from (a path, ``"bundled"``, ``"random"``).
        resize (int | None): the shorter image side is resized to this before the center crop
            (None: the crop size).
        interpolation (str): the resize filter, ``"bilinear"`` or ``"bicubic"`` (``"nearest"``...).
        weights (str | None): the pretrained weights' full name (``"ResNet50_Weights.IMAGENET1K_V2"``,
            ``"timm/resnet18.a1_in1k"``) when the model was built from named weights.
    """

    arch: str | None = None
    arch_kwargs: dict = field(default_factory=dict)
    classes: list[str] | None = None
    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    aliases: dict[str, str] = field(default_factory=dict)
    source: str | None = None
    resize: int | None = None
    interpolation: str = "bilinear"
    weights: str | None = None

    def class_name(self, index: int) -> str:
        """The name of class ``index``, or its number as text when the model has no names."""
        if self.classes and 0 <= index < len(self.classes):
            return str(self.classes[index])
        return str(index)


@dataclass(frozen=True)
class ArchSpec:
    """A registered architecture: a builder and the input it expects."""

    name: str
    builder: Callable[..., nn.Module]
    description: str = ""
    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    plugin: str = ""

    def build(self, **kwargs) -> nn.Module:
        try:
            return self.builder(**kwargs)
        except TypeError as exc:
            raise IntrospectError(
                f"cannot build architecture {self.name!r} with {kwargs}: {exc}; check the arguments"
            ) from None


def architectures() -> dict[str, ArchSpec]:
    """Every registered architecture by name, from all loaded plugins."""
    from introspect.manager import get_plugin_manager

    return get_plugin_manager().architectures()


def get_arch(name: str) -> ArchSpec:
    """The registered architecture ``name`` (or one a plugin finds by name, such as ``timm/<model>``);
    an unknown name gets the closest suggestions."""
    archs = architectures()
    if name not in archs:
        from introspect.manager import get_plugin_manager

        found = get_plugin_manager().hook.find_architecture(name=name)
        if found is not None:
            return found
        raise IntrospectError(
            f"unknown architecture {name!r}{closest(name, archs)}; run `introspect models` to list them"
        )
    return archs[name]


def meta_of(model: nn.Module) -> ModelMeta:
    """The :class:`ModelMeta` of a loaded model, or the defaults (ImageNet input) for any other module."""
    meta = getattr(model, "introspect_meta", None)
    return meta if isinstance(meta, ModelMeta) else ModelMeta()


# the models and model files import torch: loaded on first use (``introspect --help`` stays fast)
lazy_exports(__name__, {
    **dict.fromkeys(["AlexNet", "alexnet", "alexnet_torchvision"], "introspect.models.alexnet"),
    **dict.fromkeys(["load_model", "resolve_device", "save_checkpoint"], "introspect.models.load"),
    **dict.fromkeys(["ZFNet", "zfnet"], "introspect.models.zfnet"),
})

__all__ = [
    "ModelMeta", "ArchSpec", "architectures", "get_arch", "meta_of", "load_model", "save_checkpoint",
    "resolve_device", "ZFNet", "zfnet", "AlexNet", "alexnet", "alexnet_torchvision",
    "IMAGENET_MEAN", "IMAGENET_STD",
]
