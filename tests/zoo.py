"""The torchvision classification zoo at its smallest: every architecture with random weights, the
smallest input it takes, and a snapshot of everything a method could leave changed.

Random initialisation of the large models (VGG, RegNetY-128GF, ViT-H) costs seconds per model in
random-number generation alone; :func:`fast_init` fills weights from a tiled random block with the
scale each ``torch.nn.init`` call asks for, which is as random as the checks here need.
"""
from __future__ import annotations

import contextlib
import copy
import importlib
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

#: The largest members of the families whose torchvision classes take their widths as arguments, built
#: narrower: every channel count (and ViT's hidden and MLP widths, Swin's embedding, MaxViT's head width;
#: for wide ResNets and ResNeXts the bottlenecks' inner width) divided by the factor. Depth, the module
#: tree, every module's type and the order the modules run in stay torchvision's (the zoo test compares
#: them with the full-width model built on the meta device), so the default-layer and unchanged-model
#: checks see the same structure at a fraction of the parameters (RegNetY-128GF: 645 M at full width,
#: 11 M narrowed). Each family's smallest member stays at its full width.
NARROW: dict[str, int] = {
    "regnet_y_128gf": 8, "regnet_y_32gf": 8, "regnet_x_32gf": 8, "regnet_y_16gf": 8, "regnet_x_16gf": 8,
    "regnet_y_8gf": 4, "regnet_x_8gf": 4,
    "vit_h_14": 8, "vit_l_16": 8, "vit_l_32": 8, "vit_b_16": 4, "vit_b_32": 4,
    "maxvit_t": 8,
    "convnext_large": 4, "convnext_base": 4, "convnext_small": 4,
    "efficientnet_v2_l": 4, "efficientnet_b7": 4,
    "wide_resnet101_2": 4, "wide_resnet50_2": 4, "resnext101_32x8d": 4, "resnext101_64x4d": 4,
    "swin_b": 4, "swin_v2_b": 4, "swin_s": 4, "swin_v2_s": 4,
}

#: Over 12 s each on a loaded 2-core CPU even at their smallest: marked ``slow``, still run by default
#: (``-m "not slow"`` leaves them out locally).
SLOW: set[str] = set()


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


def _divide(n: int, factor: int) -> int:
    assert n % factor == 0, (n, factor)
    return n // factor


def _narrow_regnet(f, block_params, *args, **kwargs):
    from torchvision.models.regnet import BlockParams

    p = block_params
    narrow = BlockParams(depths=p.depths, widths=[_divide(w, f) for w in p.widths],
                         group_widths=[_divide(g, f) for g in p.group_widths],
                         bottleneck_multipliers=p.bottleneck_multipliers, strides=p.strides, se_ratio=p.se_ratio)
    return (narrow, *args), kwargs


def _narrow_convnext(f, block_setting, *args, **kwargs):
    from torchvision.models.convnext import CNBlockConfig

    narrow = [CNBlockConfig(_divide(c.input_channels, f), None if c.out_channels is None
                            else _divide(c.out_channels, f), c.num_layers) for c in block_setting]
    return (narrow, *args), kwargs


def _narrow_efficientnet(f, setting, *args, **kwargs):
    narrow = []
    for c in setting:
        c = copy.copy(c)
        c.input_channels, c.out_channels = _divide(c.input_channels, f), _divide(c.out_channels, f)
        narrow.append(c)
    if kwargs.get("last_channel") is not None:
        kwargs["last_channel"] = _divide(kwargs["last_channel"], f)
    return (narrow, *args), kwargs


def _narrow_keywords(*names):
    def narrow(f, *args, **kwargs):
        for key in names:
            value = kwargs[key]
            kwargs[key] = [_divide(v, f) for v in value] if isinstance(value, list) else _divide(value, f)
        return args, kwargs
    return narrow


#: family module, its model class, and how the builder's arguments to that class are narrowed.
_FAMILIES = {
    "regnet_": ("regnet", "RegNet", _narrow_regnet),
    "convnext_": ("convnext", "ConvNeXt", _narrow_convnext),
    "efficientnet_": ("efficientnet", "EfficientNet", _narrow_efficientnet),
    "vit_": ("vision_transformer", "VisionTransformer", _narrow_keywords("hidden_dim", "mlp_dim")),
    "swin_": ("swin_transformer", "SwinTransformer", _narrow_keywords("embed_dim")),
    "maxvit_": ("maxvit", "MaxVit", _narrow_keywords("stem_channels", "block_channels", "head_dim")),
    # the bottleneck's inner width (the blocks' outer widths are fixed in torchvision's ResNet class)
    "wide_resnet": ("resnet", "ResNet", _narrow_keywords("width_per_group")),
    "resnext": ("resnet", "ResNet", _narrow_keywords("width_per_group")),
}


@contextlib.contextmanager
def narrowed(name: str, factor: int | None = None, meta: bool = False):
    """While open, torchvision's builder of ``name`` (one of :data:`NARROW`) builds it narrower: the
    family's model class is called with every width divided by ``factor`` (default ``NARROW[name]``);
    the model is still an instance of torchvision's class, built by torchvision's builder. ``meta``:
    the class builds the model on the meta device."""
    f = NARROW.get(name) if factor is None else factor
    if f is None:
        yield
        return
    prefix = next(p for p in _FAMILIES if name.startswith(p))
    module_name, class_name, narrow = _FAMILIES[prefix]
    module = importlib.import_module(f"torchvision.models.{module_name}")
    cls = getattr(module, class_name)

    def build_narrow(*args, **kwargs):
        args, kwargs = narrow(f, *args, **kwargs)
        with torch.device("meta") if meta else contextlib.nullcontext():
            return cls(*args, **kwargs)

    setattr(module, class_name, build_narrow)
    try:
        yield
    finally:
        setattr(module, class_name, cls)


def build(name: str, seed: int = 0) -> tuple[nn.Module, int]:
    """``(model, side)``: architecture ``name`` through introspect's registry with random weights (the
    architectures of :data:`NARROW` narrower), and the side of the smallest square input it takes."""
    from introspect.models import load_model

    kwargs, side = SMALL.get(name, ({}, 32))
    with fast_init(seed), narrowed(name):
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
    modules = dict(model.named_modules())
    return [n for n in modules_that_run(model, x) if isinstance(modules[n], nn.Conv2d)]


def modules_that_run(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of the modules whose forward runs in eval mode, in order (a plain forward pass with a
    hook on every module)."""
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
    return order



def full_width_structure(name: str) -> tuple[list, list[str]]:
    """``(modules, run)`` of architecture ``name`` at torchvision's full width, built on the meta device
    (no memory, no arithmetic): every module's name and type, and the names of the modules whose
    forward runs in eval mode, in order, for the input :func:`build` uses."""
    kwargs, side = SMALL.get(name, ({}, 32))
    arch = "alexnet" if name == "alexnet_torchvision" else name
    with narrowed(name, 1, meta=True):
        model = torchvision.models.get_model(arch, **kwargs).eval()
    return [(n, type(m)) for n, m in model.named_modules()], modules_that_run(
        model, torch.empty(1, 3, side, side, device="meta"))
