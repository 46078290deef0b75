"""introspect: look inside trained convnets the way Zeiler & Fergus did.

The public API::

    import introspect
    model = introspect.load_model("zfnet.pt")          # or an nn.Module of your own
    image = introspect.load_image("cat.jpg", model)     # 1 x C x H x W, preprocessed for the model
    with introspect.attach(model, ["conv5"]) as rec:    # record activations, leave no trace
        model(image)
    result = introspect.project(model, image, layer="conv5")  # a method from a plugin

Analysis methods come from plugins (``introspect.methods()`` lists them) and are reachable as
attributes; every one takes the model first, the inputs second and keyword-only options. Bundled:

* ``project``, ``top_k``: deconvnet projections and top-k mining (Sec. 2.1, Figs. 1-2);
* ``feature_evolution``: features through training (Fig. 4);
* ``invariance``: translation, scale and rotation (Fig. 5);
* ``first_layer_filters``: filters, dead filters and aliasing (Fig. 6);
* ``occlusion``: occlusion sensitivity (Fig. 7);
* ``correspondence``: correspondence of object parts (Table 1);
* ``feature_generalization``: linear probes on each layer's features (Tables 4-7);
* ``attribute``: captum's attribution methods as results;
* ``report``: a browsable site of every layer, map and image;
* ``train``: the paper's training recipe.

They are declared below for type checkers and IDEs; third-party methods are reached by dispatch. A
plugin method may not take a name of the core (``introspect plugins`` reports the clash).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

from introspect.errors import IntrospectError
from introspect.hookspecs import hookimpl

#: Names of the core loaded on first use, so that ``import introspect`` (and ``introspect --help``) does
#: not import torch: name -> module.
_LAZY = {
    **dict.fromkeys(["RULES", "Rule", "apply_rule", "attach", "eval_mode", "layer_table", "receptive_field",
                     "resolve_layer"], "introspect.core"),
    **dict.fromkeys(["ModelMeta", "alexnet", "architectures", "load_model", "meta_of", "save_checkpoint", "zfnet"],
                    "introspect.models"),
}


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
    from introspect.images import Preprocess, preprocess_image
    from introspect.models import meta_of

    pre = Preprocess.from_meta(meta_of(model)) if model is not None else None
    return preprocess_image(path, pre) if pre is not None else preprocess_image(path)


if TYPE_CHECKING:  # the bundled methods, for type checkers and IDEs (at run time: __getattr__)
    from introspect.training.run import train as train
    from introspect_attribute.method import attribute as attribute
    from introspect_correspondence.method import correspondence as correspondence
    from introspect_deconv.projection import project as project
    from introspect_deconv.top import top_k as top_k
    from introspect_evolution.method import feature_evolution as feature_evolution
    from introspect_filters.method import first_layer_filters as first_layer_filters
    from introspect_generalization.method import feature_generalization as feature_generalization
    from introspect_invariance.method import invariance as invariance
    from introspect_occlusion.method import occlusion as occlusion
    from introspect_report.method import report as report


if TYPE_CHECKING:  # the core's names (at run time: __getattr__, on first use)
    from introspect.core import RULES as RULES
    from introspect.core import Rule as Rule
    from introspect.core import apply_rule as apply_rule
    from introspect.core import attach as attach
    from introspect.core import eval_mode as eval_mode
    from introspect.core import layer_table as layer_table
    from introspect.core import receptive_field as receptive_field
    from introspect.core import resolve_layer as resolve_layer
    from introspect.models import ModelMeta as ModelMeta
    from introspect.models import alexnet as alexnet
    from introspect.models import architectures as architectures
    from introspect.models import load_model as load_model
    from introspect.models import meta_of as meta_of
    from introspect.models import save_checkpoint as save_checkpoint
    from introspect.models import zfnet as zfnet


def __dir__() -> list[str]:
    """The module's names and every registered method (plugins are loaded to list them)."""
    try:
        found = set(methods())
    except IntrospectError:
        found = set()
    return sorted(set(globals()) | set(_LAZY) | found)


def __getattr__(name: str):
    if name.startswith("_"):
        raise AttributeError(name)
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    found = methods().get(name)
    if found is None:
        raise AttributeError(f"module 'introspect' has no attribute {name!r}")
    return found.func


__all__ = [
    "__version__", "hookimpl", "IntrospectError", "attach", "apply_rule", "eval_mode", "layer_table", "resolve_layer",
    "receptive_field", "RULES", "Rule", "load_model", "save_checkpoint", "ModelMeta", "meta_of",
    "architectures", "zfnet", "alexnet", "methods", "get_plugin_manager", "load_image",
]
