"""The hook core: attach to any ``nn.Module``, record activations, reshape gradients, and leave the
model exactly as it was found."""
from introspect.core.attach import Recorder, attach, eval_mode
from introspect.core.layers import Field, LayerInfo, layer_names, layer_table, receptive_field, resolve_layer
from introspect.core.rules import RULES, Rule, apply_rule
from introspect.core.targets import resolve_target, resolve_targets

__all__ = [
    "Recorder",
    "attach",
    "eval_mode",
    "LayerInfo",
    "Field",
    "layer_table",
    "resolve_layer",
    "receptive_field",
    "layer_names",
    "RULES",
    "Rule",
    "apply_rule",
    "resolve_target",
    "resolve_targets",
]
