"""The built-in plugin: ZFNet, AlexNet and torchvision's classification networks, and the model
file formats introspect reads (checkpoints, state dicts, safetensors, trusted pickles)."""
from __future__ import annotations

import functools

from introspect.hookspecs import hookimpl
from introspect.lazy import lazy_function

# builders that import torch only when a model is built
zfnet = lazy_function("introspect.models.zfnet", "zfnet", "ZFNet (Zeiler & Fergus 2014, Fig. 3).")
alexnet = lazy_function("introspect.models.alexnet", "alexnet", "AlexNet as in Krizhevsky et al. 2012 (with LRN).")
alexnet_torchvision = lazy_function("introspect.models.alexnet", "alexnet_torchvision", "torchvision's AlexNet layout.")


def _torchvision_builder(name: str, **kwargs):
    import torchvision

    kwargs.setdefault("weights", None)
    if name in ("inception_v3", "googlenet"):
        kwargs.setdefault("aux_logits", False)
        kwargs.setdefault("init_weights", True)
    return torchvision.models.get_model(name, **kwargs)


@hookimpl
def register_architectures(register):
    register("zfnet", zfnet, description="Zeiler & Fergus 2014, Fig. 3 (7x7/2 conv1, LRN)")
    register("alexnet", alexnet, description="Krizhevsky et al. 2012, the paper's baseline (11x11/4 conv1, LRN)")
    register("alexnet_torchvision", alexnet_torchvision, description="torchvision's AlexNet layout (no LRN)")
    if getattr(register, "listing", False):  # `introspect plugins`: the zoo is listed as one line, no import
        return
    import torchvision

    for name in torchvision.models.list_models(module=torchvision.models):
        if name == "alexnet":
            continue
        size = (3, 299, 299) if name == "inception_v3" else (3, 224, 224)
        register(name, functools.partial(_torchvision_builder, name), description="torchvision", input_size=size)


@hookimpl(trylast=True)
def load_model_file(path, arch, trust_pickle, arch_kwargs):
    from introspect.models.load import read_model_file

    return read_model_file(path, arch=arch, trust_pickle=trust_pickle, arch_kwargs=arch_kwargs)


@hookimpl(trylast=True)
def load_pretrained(arch, weights, arch_kwargs):
    from introspect.models.weights import build_pretrained

    return build_pretrained(arch, weights, arch_kwargs)
