"""introspect: look inside trained convnets the way Zeiler & Fergus did.

The public API::

    import introspect
    model = introspect.load_model("zfnet.pt")          # or an nn.Module of your own
    image = introspect.load_image("cat.jpg", model)     # 1 x C x H x W, preprocessed for the model
    with introspect.attach(model, ["conv5"]) as rec:    # record activations, leave no trace
        model(image)
    result = introspect.project(model, image, layer="conv5")  # a method from a plugin

Analysis methods come from plugins (``introspect.methods()``) and are reachable as attributes:
``introspect.project``, ``introspect.top_k``, ``introspect.occlusion``, ``introspect.correspondence``.
"""
from __future__ import annotations

__version__ = "0.1.0"

from introspect.core import RULES, Rule, apply_rule, attach, eval_mode, layer_table, receptive_field, resolve_layer
from introspect.errors import IntrospectError
from introspect.hookspecs import hookimpl
from introspect.models import ModelMeta, alexnet, architectures, load_model, meta_of, save_checkpoint, zfnet


def methods():
    """Every registered analysis method: name -> :class:`introspect.manager.Method`."""
    from introspect.manager import methods as _methods

    return _methods()


def get_plugin_manager():
    """The plugin manager (loads the ``introspect`` entry points on first use)."""
    from introspect.manager import get_plugin_manager as _get

    return _get()


def load_image(path, model=None):
    """Read an image file as a ``1 x C x H x W`` tensor preprocessed for ``model`` (ImageNet default)."""
    from introspect.images import Preprocess
    from introspect.images import load_image as _load

    pre = Preprocess.from_meta(meta_of(model)) if model is not None else None
    return _load(path, pre) if pre is not None else _load(path)


def __getattr__(name: str):
    if name.startswith("_"):
        raise AttributeError(name)
    found = methods().get(name)
    if found is None:
        raise AttributeError(f"module 'introspect' has no attribute {name!r}")
    return found.func


__all__ = [
    "__version__", "hookimpl", "IntrospectError", "attach", "apply_rule", "eval_mode", "layer_table", "resolve_layer",
    "receptive_field", "RULES", "Rule", "load_model", "save_checkpoint", "ModelMeta", "meta_of",
    "architectures", "zfnet", "alexnet", "methods", "get_plugin_manager", "load_image",
]
