"""The hook core: attach to any ``nn.Module``, record activations, reshape gradients, and leave the
model exactly as it was found. The names below are imported on first use (they import torch)."""
from typing import TYPE_CHECKING

from introspect.lazy import lazy_exports

if TYPE_CHECKING:
    from introspect.core.attach import Recorder as Recorder
    from introspect.core.attach import attach as attach
    from introspect.core.attach import eval_mode as eval_mode
    from introspect.core.layers import Field as Field
    from introspect.core.layers import LayerInfo as LayerInfo
    from introspect.core.layers import layer_names as layer_names
    from introspect.core.layers import layer_table as layer_table
    from introspect.core.layers import receptive_field as receptive_field
    from introspect.core.layers import resolve_layer as resolve_layer
    from introspect.core.rules import RULES as RULES
    from introspect.core.rules import Rule as Rule
    from introspect.core.rules import apply_rule as apply_rule
    from introspect.core.targets import resolve_target as resolve_target
    from introspect.core.targets import resolve_targets as resolve_targets

lazy_exports(__name__, {
    **dict.fromkeys(["Recorder", "attach", "eval_mode"], "introspect.core.attach"),
    **dict.fromkeys(["Field", "LayerInfo", "layer_names", "layer_table", "receptive_field", "resolve_layer"],
                    "introspect.core.layers"),
    **dict.fromkeys(["RULES", "Rule", "apply_rule"], "introspect.core.rules"),
    **dict.fromkeys(["resolve_target", "resolve_targets"], "introspect.core.targets"),
})

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
