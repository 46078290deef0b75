"""timm models in introspect (optional; ``pip install "introspect[timm]"``).

``--arch timm/<model>`` builds any model ``timm.list_models()`` knows (random weights, or a model
file's state dict); ``--weights DEFAULT`` (or a pretrained tag such as ``a1_in1k``) loads timm's
pretrained weights from the local Hugging Face cache, downloading them only when online, as timm
does. Preprocessing follows timm's data config (input size, resize ``floor(size / crop_pct)``,
interpolation, mean/std) and ImageNet-trained weights bring their class names.

The core never imports timm; this plugin imports it only when a ``timm/`` architecture is used.
Without timm installed the plugin stays listed by ``introspect plugins`` as inactive, with the reason.
"""
from __future__ import annotations

import functools
import importlib.util
import math

from introspect.plugin import ArchSpec, IntrospectError, ModelMeta, closest, hookimpl

PREFIX = "timm/"
INSTALL = 'pip install "introspect[timm]"'


def inactive_reason() -> str | None:
    """Why this plugin does nothing here (timm is not installed), or None when it is active."""
    if importlib.util.find_spec("timm") is None:
        return f"timm is not installed; {INSTALL} to use --arch timm/<model>"
    return None


def _timm():
    reason = inactive_reason()
    if reason:
        raise IntrospectError(reason)
    import timm

    return timm


def _split(arch: str) -> tuple[str, str | None]:
    """``timm/resnet18.a1_in1k`` -> ``("resnet18", "a1_in1k")``."""
    name, _, tag = arch[len(PREFIX):].partition(".")
    return name, tag or None


def _check_name(name: str) -> None:
    timm = _timm()
    known = timm.list_models()
    if name not in known:
        raise IntrospectError(f"unknown timm model {name!r}{closest(name, known)}; any name of timm.list_models() "
                              "works as --arch timm/<name>")


def _preprocessing(cfg) -> dict:
    """Input size, resize, interpolation, mean and std of timm's evaluation transform for ``cfg``."""
    c, h, w = cfg.input_size
    crop_pct = cfg.crop_pct or 1.0
    return {"input_size": (c, h, w), "resize": int(math.floor(min(h, w) / crop_pct)),
            "interpolation": cfg.interpolation or "bilinear", "mean": tuple(cfg.mean), "std": tuple(cfg.std)}


def _build(name: str, **kwargs):
    return _timm().create_model(name, pretrained=False, **kwargs)


@hookimpl
def find_architecture(name):
    if not str(name).startswith(PREFIX):
        return None
    base, _ = _split(name)
    _check_name(base)
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(base)
    pre = _preprocessing(cfg) if cfg is not None else {"input_size": (3, 224, 224), "mean": None, "std": None}
    extra = {k: pre[k] for k in ("mean", "std") if pre.get(k)}
    return ArchSpec(name, functools.partial(_build, base), description="timm", input_size=pre["input_size"],
                    plugin="timm", **extra)


def _class_names(cfg, num_classes: int) -> list[str] | None:
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(cfg)
    if subset is None:
        return None
    names = ImageNetInfo(subset).label_descriptions()
    return list(names) if len(names) == num_classes else None


@hookimpl
def load_pretrained(arch, weights, arch_kwargs):
    if not str(arch).startswith(PREFIX):
        return None
    timm = _timm()
    base, arch_tag = _split(arch)
    _check_name(base)
    from timm.models import get_pretrained_cfg

    tags = [m.partition(".")[2] for m in timm.list_pretrained(f"{base}.*")]
    text = str(weights).strip()
    tag = (
        arch_tag
        if text.upper() == "DEFAULT" and arch_tag
        else text.partition(".")[2]
        if text.startswith(base + ".")
        else text
    )
    if tag.upper() == "DEFAULT":
        tag = tags[0] if tags else None
    if tag not in tags:
        listed = ", ".join(tags) if tags else "none"
        raise IntrospectError(f"unknown weights {weights!r} for timm/{base}{closest(str(tag), tags)}; "
                              f"use DEFAULT or one of its pretrained tags: {listed}")
    full = f"{base}.{tag}"
    try:
        model = timm.create_model(full, pretrained=True, **dict(arch_kwargs or {}))
    except TypeError as exc:
        raise IntrospectError(
            f"cannot build timm/{base} with {arch_kwargs}: {exc}; check the --arch-arg values"
        ) from None
    except Exception as exc:  # hub errors: offline, not cached, corrupt file
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        cfg = get_pretrained_cfg(full)
        where = (
            f"https://huggingface.co/{cfg.hf_hub_id}" if cfg is not None and cfg.hf_hub_id else "the Hugging Face hub"
        )
        raise IntrospectError(
            f"cannot load timm weights {full} ({type(exc).__name__}: {line}); they are read from the "
            f"Hugging Face cache (HF_HOME) and downloaded from {where} when online"
        ) from None
    cfg = model.pretrained_cfg
    cfg_obj = get_pretrained_cfg(full)
    pre = _preprocessing(cfg_obj)
    meta = ModelMeta(arch=f"{PREFIX}{base}", arch_kwargs=dict(arch_kwargs or {}),
                     classes=_class_names(cfg, model.num_classes), input_size=pre["input_size"], mean=pre["mean"],
                     std=pre["std"], resize=pre["resize"], interpolation=pre["interpolation"],
                     weights=f"{PREFIX}{full}", source=f"timm/{full}")
    return model, meta
