"""The one table of attribution methods: ``--method`` names, their options and how each is called.

Adding a captum method is one :class:`Method` entry in :data:`METHODS`: its name, the captum class
(by name, imported when used), whether it needs ``--layer``, whether it is gradient-based (so
``--noise-tunnel`` may wrap it) and its options (each becomes ``--opt NAME=VALUE`` on the command
line and a keyword of ``introspect.attribute``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Option:
    """One option of a method: its type (``int``, ``float``, ``bool`` or ``str``), default, help and,
    for strings, the allowed values."""

    type: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()

    def parse(self, name: str, value: Any) -> Any:
        """``value`` (a Python value or a command-line string) as this option's type, checked."""
        from introspect.plugin import IntrospectError

        if self.type is bool and isinstance(value, str):
            lowered = value.strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise IntrospectError(f"option {name} takes true or false, got {value!r}")
            value = lowered in ("1", "true", "yes", "on")
        try:
            parsed = self.type(value) if not isinstance(value, bool) or self.type is bool else None
        except (TypeError, ValueError):
            parsed = None
        if parsed is None or (self.type is int and isinstance(value, float) and value != int(value)):
            raise IntrospectError(f"option {name} takes a {self.type.__name__}, got {value!r}")
        if self.choices and parsed not in self.choices:
            raise IntrospectError(f"option {name} must be one of {', '.join(self.choices)}, got {parsed!r}")
        if self.type in (int, float) and not isinstance(parsed, bool) and parsed < 0:
            raise IntrospectError(f"option {name} must not be negative, got {parsed!r}")
        return parsed


@dataclass(frozen=True)
class Method:
    """One attribution method.

    Attributes:
        name (str): the ``--method`` name.
        title (str): what it is, in a few words.
        captum (str): the class, ``module:Name`` (``introspect.captum`` for the fast drop-ins).
        gradient (bool): gradient-based: ``--noise-tunnel`` may wrap it.
        layer (bool): built with a layer (``--layer`` required).
        upsample (bool): a layer attribution, upsampled to the input.
        options (dict[str, Option]): the method's own options.
        kwargs (callable): ``kwargs(x, options) -> dict``: the keywords of captum's ``attribute``
            besides the inputs and ``target``.
    """

    name: str
    title: str
    captum: str
    gradient: bool
    kwargs: Callable
    layer: bool = False
    upsample: bool = False
    options: dict = field(default_factory=dict)

    def build(self, model, layer_module=None):
        """The captum attribution object for ``model`` (and the layer module)."""
        import importlib

        module, name = self.captum.split(":")
        cls = getattr(importlib.import_module(module), name)
        return cls(model, layer_module) if self.layer else cls(model)


def _grid_mask(x, side: int):
    """A feature mask of ``side x side`` pixel squares shared by the channels: ``1 x 1 x H x W``."""
    import torch

    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device) // side
    cols = torch.arange(w, device=x.device) // side
    per_row = (w + side - 1) // side
    return (rows[:, None] * per_row + cols[None, :]).view(1, 1, h, w)


def _constant(x, value: float):
    """A ``1 x C x H x W`` baseline holding ``value`` (a distribution of one baseline)."""
    import torch

    return torch.full((1, *x.shape[1:]), value, dtype=x.dtype, device=x.device)


def _occlusion(x, o):
    c = x.shape[1]
    return {"sliding_window_shapes": (c, o["window"], o["window"]), "strides": (c, o["stride"], o["stride"]),
            "baselines": o["baseline"]}


_BASELINE = Option(float, 0.0, "the reference value (in the model's normalized input space)")
_GRID = Option(int, 16, "features are squares of this many pixels")
_PPE = Option(int, 16, "perturbations evaluated per forward call")

#: Every method, by ``--method`` name.
METHODS: dict[str, Method] = {m.name: m for m in [
    Method("saliency", "gradient magnitude (Simonyan et al.)", "captum.attr:Saliency", True,
           lambda x, o: {"abs": o["abs"]},
           options={"abs": Option(bool, True, "absolute value of the gradient")}),
    Method("input_x_gradient", "input times gradient", "captum.attr:InputXGradient", True,
           lambda x, o: {}),
    Method("integrated_gradients", "integrated gradients (Sundararajan et al.)", "captum.attr:IntegratedGradients",
           True, lambda x, o: {"baselines": o["baseline"], "n_steps": o["n_steps"], "method": o["integration"],
                                "internal_batch_size": o["internal_batch_size"] or None},
           options={"n_steps": Option(int, 50, "steps of the path integral"),
                    "integration": Option(str, "gausslegendre", "approximation of the integral",
                                          ("gausslegendre", "riemann_right", "riemann_left", "riemann_middle",
                                           "riemann_trapezoid")),
                    "internal_batch_size": Option(int, 0, "steps per backward pass (0: all at once)"),
                    "baseline": _BASELINE}),
    Method("gradient_shap", "gradient SHAP: expected gradients between a baseline and the noisy input",
           "captum.attr:GradientShap", False,
           lambda x, o: {"baselines": _constant(x, o["baseline"]), "n_samples": o["n_samples"],
                         "stdevs": o["stdevs"]},
           options={"n_samples": Option(int, 16, "random points per image"),
                    "stdevs": Option(float, 0.0, "standard deviation of the noise added to each point"),
                    "baseline": _BASELINE}),
    Method("guided_backprop", "guided backpropagation", "introspect.captum:GuidedBackprop", True,
           lambda x, o: {}),
    Method("deconvolution", "the deconvnet (Zeiler & Fergus)", "introspect.captum:Deconvolution", True,
           lambda x, o: {}),
    Method("guided_gradcam", "guided Grad-CAM", "captum.attr:GuidedGradCam", True,
           lambda x, o: {"interpolate_mode": o["interpolate"]},
           layer=True, options={"interpolate": Option(str, "nearest", "upsampling of the Grad-CAM map",
                                                      ("nearest", "bilinear", "bicubic", "area"))}),
    Method("layer_gradcam", "Grad-CAM of a layer, upsampled to the input", "captum.attr:LayerGradCam", True,
           lambda x, o: {"relu_attributions": o["relu"]},
           layer=True, upsample=True,
           options={"relu": Option(bool, True, "keep the positive part (Grad-CAM's ReLU)"),
                    "interpolate": Option(str, "bilinear", "upsampling to the input",
                                          ("nearest", "bilinear", "bicubic", "area"))}),
    Method("occlusion", "occlusion (Zeiler & Fergus), incremental inference", "introspect.captum:Occlusion",
           False, _occlusion,
           options={"window": Option(int, 16, "side of the occluding square, in pixels"),
                    "stride": Option(int, 8, "step of the square, in pixels"), "baseline": _BASELINE}),
    Method("feature_ablation", "ablation of square patches", "captum.attr:FeatureAblation", False,
           lambda x, o: {"baselines": o["baseline"], "feature_mask": _grid_mask(x, o["grid"]),
                                "perturbations_per_eval": o["perturbations_per_eval"]},
           options={"grid": _GRID, "baseline": _BASELINE, "perturbations_per_eval": _PPE}),
    Method("shapley_value_sampling", "Shapley values of square patches, sampled", "captum.attr:ShapleyValueSampling",
           False, lambda x, o: {"baselines": o["baseline"], "feature_mask": _grid_mask(x, o["grid"]),
                                       "n_samples": o["n_samples"],
                                       "perturbations_per_eval": o["perturbations_per_eval"]},
           options={"grid": Option(int, 32, "features are squares of this many pixels"),
                    "n_samples": Option(int, 8, "random feature orders"), "baseline": _BASELINE,
                    "perturbations_per_eval": _PPE}),
]}

NOISE_TUNNELS = ("smoothgrad", "smoothgrad_sq", "vargrad")


def method_spec(name: str) -> Method:
    """The table entry of ``name``; unknown names give one line with the closest ones."""
    from introspect.plugin import IntrospectError, closest

    if name not in METHODS:
        raise IntrospectError(f"unknown method {name!r}{closest(name, list(METHODS))}; "
                              f"use one of {', '.join(METHODS)}")
    return METHODS[name]


def method_options(spec: Method, given: dict) -> dict:
    """The method's options: defaults, overridden by ``given`` (parsed and checked)."""
    from introspect.plugin import IntrospectError, closest

    unknown = [k for k in given if k not in spec.options]
    if unknown:
        names = ", ".join(spec.options) or "none"
        raise IntrospectError(f"method {spec.name} has no option {unknown[0]!r}"
                              f"{closest(unknown[0], list(spec.options))}; its options: {names}")
    return {k: opt.parse(k, given.get(k, opt.default)) for k, opt in spec.options.items()}


__all__ = ["METHODS", "NOISE_TUNNELS", "Method", "Option", "method_spec", "method_options"]
