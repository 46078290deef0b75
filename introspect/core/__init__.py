"""The hook core: attach to any ``nn.Module``, record activations, reshape gradients, and leave the
model exactly as it was found."""
from introspect.core.attach import Recorder, attach
from introspect.core.layers import (
    LayerInfo,
    Field,
    layer_table,
    resolve_layer,
    receptive_field,
    layer_names,
)
from introspect.core.rules import RULES, Rule, apply_rule

__all__ = [
    "Recorder",
    "attach",
    "LayerInfo",
    "Field",
    "layer_table",
    "resolve_layer",
    "receptive_field",
    "layer_names",
    "RULES",
    "Rule",
    "apply_rule",
]
