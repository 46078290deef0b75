"""The torchvision classification zoo at its smallest: every architecture with random weights, the
smallest input it takes, and a snapshot of everything a method could leave changed.

Random initialisation of the large models (VGG, RegNetY-128GF, ViT-H) costs seconds per model in
random-number generation alone; :func:`fast_init` fills weights from a tiled random block with the
scale each ``torch.nn.init`` call asks for, which is as random as the checks here need.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torchvision
from torch import nn

#: introspect's name of every torchvision classification architecture.
ZOO = sorted("alexnet_torchvision" if n == "alexnet" else n
             for n in torchvision.models.list_models(module=torchvision.models))

#: Builder arguments and input side for the smallest input each architecture takes (default: 32).
SMALL: dict[str, tuple[dict, int]] = {
    "alexnet_torchvision": ({}, 64),
    "inception_v3": ({}, 75),
    "maxvit_t": ({}, 224),  # partition size 7 at every stage: 224 is the smallest input
    "vit_b_16": ({"image_size": 32}, 32),
    "vit_b_32": ({"image_size": 64}, 64),
    "vit_l_16": ({"image_size": 32}, 32),
    "vit_l_32": ({"image_size": 64}, 64),
    "vit_h_14": ({"image_size": 28}, 28),
}

#: Over 12 s each on a loaded 2-core CPU even at their smallest (the largest models, and MaxViT at
#: 224 px): marked ``slow``, still run by default (``-m "not slow"`` leaves them out locally).
SLOW = {"regnet_y_128gf", "vit_h_14", "maxvit_t", "vit_l_32", "vit_l_16", "convnext_large", "wide_resnet101_2",
        "efficientnet_v2_l", "regnet_y_32gf", "swin_b", "resnext101_64x4d", "swin_v2_b", "regnet_x_32gf",
        "efficientnet_b7", "vgg16", "resnext101_32x8d", "vgg16_bn", "regnet_y_16gf", "vgg19", "vgg19_bn",
        "convnext_base"}


_BLOCK = 65537  # a prime: no two filters of a layer start at the same place in the block


@contextlib.contextmanager
def fast_init(seed: int = 0):
    """``torch.nn.init``'s random fills replaced by a tiled seeded block with the same mean and scale."""
    init = torch.nn.init
    g = torch.Generator().manual_seed(seed)
    normal_block = torch.randn(_BLOCK, generator=g)
    uniform_block = torch.rand(_BLOCK, generator=g)
    offset = [0]

    def tile(t: torch.Tensor, block: torch.Tensor, scale: float, shift: float) -> torch.Tensor:
        """``t`` (flattened) = ``block`` from a rolling start, wrapped round, times ``scale`` plus
        ``shift``: written in place block by block, no temporary the size of ``t``."""
        with torch.no_grad():
            flat = t.view(-1) if t.is_contiguous() else torch.empty(t.numel(), dtype=t.dtype)
            n = t.numel()
            start = offset[0] % _BLOCK
            offset[0] += 7919
            pos = 0
            while pos < n:
                m = min(n - pos, _BLOCK - start)
                torch.mul(block[start:start + m], scale, out=flat[pos:pos + m])
                pos, start = pos + m, 0
            if shift:
                flat.add_(shift)
            if not t.is_contiguous():
                t.copy_(flat.view(t.shape))
        return t

    def normal_(t, mean=0.0, std=1.0, *args, **kwargs):
        return tile(t, normal_block, std, mean)

    def trunc_normal_(t, mean=0.0, std=1.0, a=-2.0, b=2.0, *args, **kwargs):
        with torch.no_grad():
            return tile(t, normal_block, std, mean).clamp_(a, b)

    def uniform_(t, a=0.0, b=1.0, *args, **kwargs):
        return tile(t, uniform_block, b - a, a)

    def kaiming_(t, a=0, mode="fan_in", nonlinearity="leaky_relu", *args, **kwargs):
        fan = init._calculate_correct_fan(t, mode) if t.dim() >= 2 else max(t.numel(), 1)
        std = init.calculate_gain(nonlinearity, a) / math.sqrt(max(fan, 1))
        return normal_(t, 0.0, std)

    def xavier_(t, gain=1.0, *args, **kwargs):
        fan_in, fan_out = init._calculate_fan_in_and_fan_out(t)
        return normal_(t, 0.0, gain * math.sqrt(2.0 / float(fan_in + fan_out)))

    patched = {"normal_": normal_, "trunc_normal_": trunc_normal_, "uniform_": uniform_,
               "kaiming_normal_": kaiming_, "kaiming_uniform_": kaiming_, "xavier_uniform_": xavier_,
               "xavier_normal_": xavier_}
    saved = {name: getattr(init, name) for name in patched}
    try:
        for name, fn in patched.items():
            setattr(init, name, fn)
        yield
    finally:
        for name, fn in saved.items():
            setattr(init, name, fn)


def build(name: str, seed: int = 0) -> tuple[nn.Module, int]:
    """``(model, side)``: architecture ``name`` through introspect's registry with random weights, and
    the side of the smallest square input it takes."""
    from introspect.models import load_model

    kwargs, side = SMALL.get(name, ({}, 32))
    with fast_init(seed):
        model = load_model(None, name, device="cpu", arch_kwargs=dict(kwargs))
    model.introspect_meta.input_size = (3, side, side)
    return model, side


# --------------------------------------------------------------------------------------------------
# the unchanged-model guarantee
# --------------------------------------------------------------------------------------------------
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_state_dict_hooks", "_load_state_dict_pre_hooks", "_forward_hooks_with_kwargs",
               "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called")


def snapshot(model: nn.Module, copy: bool = True) -> dict:
    """Everything a method must leave as it found it: every parameter and buffer (values, identity,
    storage, version counter, requires_grad, grad), every module's training flag, inplace flags, hooks
    and the set of attributes."""
    tensors = {}
    for kind, items in (("param", model.named_parameters(remove_duplicate=False)),
                        ("buffer", model.named_buffers(remove_duplicate=False))):
        for name, t in items:
            if t is None:
                continue
            tensors[f"{kind}:{name}"] = (
                t,
                t.detach().clone() if copy else None,
                t.data_ptr(),
                t._version,
                t.requires_grad,
                None if kind == "buffer" or t.grad is None else t.grad.clone(),
            )
    modules = {}
    for name, m in model.named_modules(remove_duplicate=False):
        hooks = tuple(len(getattr(m, d, {}) or {}) for d in _HOOK_DICTS)
        modules[name] = (m, m.training, getattr(m, "inplace", None), hooks, frozenset(vars(m)))
    return {"tensors": tensors, "modules": modules}


def changes(before: dict, model: nn.Module, values: bool = True) -> list[str]:
    """What differs between ``before`` (a :func:`snapshot`) and ``model`` now; empty when unchanged.
    ``values=False`` skips comparing the numbers themselves (an in-place write still shows in the
    version counter); the last check of a sweep compares them."""
    after = snapshot(model, copy=False)  # compared with ``before``'s copies: nothing to copy now
    found = []
    if before["tensors"].keys() != after["tensors"].keys():
        found.append(f"tensors added/removed: {sorted(before['tensors'].keys() ^ after['tensors'].keys())[:3]}")
    for key, (t, value, ptr, version, grad_flag, grad) in before["tensors"].items():
        if key not in after["tensors"]:
            continue
        t2, _, ptr2, version2, grad_flag2, _ = after["tensors"][key]
        if t2 is not t or ptr2 != ptr:
            found.append(f"{key} replaced")
        elif values and not torch.equal(t2.detach(), value):
            found.append(f"{key} values changed")
        elif version2 != version:
            found.append(f"{key} written in place (version {version} -> {version2})")
        if grad_flag2 != grad_flag:
            found.append(f"{key} requires_grad changed")
        if key.startswith("param:") and (t2.grad is None) != (grad is None):
            found.append(f"{key} grad {'left behind' if grad is None else 'removed'}")
    if before["modules"].keys() != after["modules"].keys():
        found.append("modules added/removed")
    for name, (m, training, inplace, hooks, attrs) in before["modules"].items():
        if name not in after["modules"]:
            continue
        m2, training2, inplace2, hooks2, attrs2 = after["modules"][name]
        if m2 is not m:
            found.append(f"module {name!r} replaced")
        if training2 != training:
            found.append(f"module {name!r} training flag {training} -> {training2}")
        if inplace2 != inplace:
            found.append(f"module {name!r} inplace {inplace} -> {inplace2}")
        if hooks2 != hooks:
            found.append(f"module {name!r} hooks {hooks} -> {hooks2}")
        if attrs2 != attrs:
            found.append(f"module {name!r} attributes {sorted(attrs ^ attrs2)[:3]}")
    return found


def convs_that_run(model: nn.Module, x: torch.Tensor) -> list[str]:
    """The reference: names of the Conv2d modules whose forward runs in eval mode, in order, from a
    plain forward pass with a hook on every module (not only convolutions)."""
    order: list[str] = []
    names = {m: n for n, m in model.named_modules()}
    handles = [m.register_forward_pre_hook(lambda mod, inp: order.append(names[mod])) for m in names]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    modules = dict(model.named_modules())
    return [n for n in order if isinstance(modules[n], nn.Conv2d)]
