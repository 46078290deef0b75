"""``attribute(model, images, method, ...)``: one of captum's attribution methods, as a result.

The methods and their options come from one table (:mod:`introspect_attribute.table`); occlusion,
deconvolution and guided backpropagation run through :mod:`introspect.captum` (occlusion with
incremental inference). ``noise_tunnel`` wraps a gradient method in captum's ``NoiseTunnel``;
``metrics`` adds captum's ``infidelity`` and ``sensitivity_max`` of the attribution.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from introspect.plugin import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    IntrospectError,
    Shown,
    drawn_once,
    image_batch,
    meta_of,
    resolve_layer,
    resolve_targets,
    shape_text,
    to_model,
)
from introspect_attribute.table import NOISE_TUNNELS, Method, method_options, method_spec


@dataclass(repr=False)
class AttributionResult(Shown):
    """Attributions of a batch of images by one method.

    Attributes:
        method (str): the ``--method`` name; ``options`` its options as used.
        attribution (Tensor): ``N x C x H x W`` (a layer method upsampled: ``N x 1 x H x W``), float32, CPU.
        input (Tensor): ``N x C x H x W``, the preprocessed images.
        targets (list[int]): the target class of each image; ``target_names`` their names.
        layer (str | None): the layer of a layer method.
        noise_tunnel (str | None): ``smoothgrad``, ``smoothgrad_sq`` or ``vargrad``, if used.
        metrics (dict | None): ``infidelity`` and ``sensitivity_max`` per image.
        path (str | None): for the ``introspect.captum`` classes, the path that ran.
        mean, std (tuple[float, ...]): the input normalization (to show the image).
    """

    method: str
    attribution: torch.Tensor
    input: torch.Tensor
    targets: list[int]
    target_names: list[str]
    options: dict = field(default_factory=dict)
    layer: str | None = None
    noise_tunnel: str | None = None
    metrics: dict | None = None
    path: str | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: method, options, targets, the range and total of each map, metrics."""
        per_image = []
        for i, (t, name) in enumerate(zip(self.targets, self.target_names)):
            a = self.attribution[i]
            per_image.append({"target": t, "target_name": name, "sum": float(a.sum()),
                              "min": float(a.min()), "max": float(a.max()),
                              "abs_mean": float(a.abs().mean())})
        return {"method": self.method, "options": dict(self.options), "layer": self.layer,
                "noise_tunnel": self.noise_tunnel, "path": self.path,
                "input_shape": list(self.input.shape), "attribution_shape": list(self.attribution.shape),
                "images": per_image, "metrics": self.metrics}

    def _repr_lines(self) -> list[str]:
        how = f" through a {self.noise_tunnel} noise tunnel" if self.noise_tunnel else ""
        lines = [f"AttributionResult: {self.method}{how}{f' at {self.layer}' if self.layer else ''} of "
                 f"{self.input.shape[0]} image{'s' if self.input.shape[0] != 1 else ''} of {shape_text(self.input[0])}"]
        for i, name in enumerate(self.target_names[:3]):
            a = self.attribution[i]
            lines.append(f"  image {i}, target {name}: sum {float(a.sum()):.4g}, range {float(a.min()):.4g} .. "
                         f"{float(a.max()):.4g}")
        lines.append(f"  attribution {shape_text(self.attribution)}" + (f", path {self.path}" if self.path else ""))
        return lines

    def _figures(self) -> dict:
        from introspect_attribute.figure import heat_maps

        picture = drawn_once(lambda: heat_maps(self))
        n = self.attribution.shape[0]
        return {name: picture(name) for i in range(n) for name in (f"signed_{i}", f"absolute_{i}")}

    def save(self, out) -> list:
        """Write ``attribution.npy``, ``input.npy``, ``result.json`` and per image the heat maps
        ``signed_<i>.png`` and ``absolute_<i>.png`` (over the image, with a colour bar) into ``out``."""
        from introspect.plugin import output_folder, written
        from introspect_attribute.figure import heat_maps

        names = ["attribution.npy", "input.npy", "result.json"]
        with output_folder(out) as od:
            od.save_npy("attribution.npy", self.attribution)
            od.save_npy("input.npy", self.input)
            for name, picture in heat_maps(self).items():
                od.save_png(name, picture)
                names.append(name)
            od.save_json("result.json", self.to_dict())
        return written(od, names)


def attribute(
    model: nn.Module,
    images: torch.Tensor,
    method: str,
    *,
    target: int | str | Sequence[int | str] | None = None,
    layer: str | nn.Module | None = None,
    noise_tunnel: str | None = None,
    nt_samples: int = 10,
    nt_stdevs: float = 0.1,
    metrics: bool = False,
    metric_samples: int = 10,
    seed: int = 0,
    **options: Any,
) -> AttributionResult:
    """Attributions of ``images`` by one of captum's methods (see ``introspect attribute --help``
    for the list and each method's options).

    Args:
        model (nn.Module): a classifier returning ``N x K`` scores; run in eval mode.
        images (Tensor): ``N x C x H x W`` (or ``C x H x W``) preprocessed images.
        method (str): ``saliency``, ``input_x_gradient``, ``integrated_gradients``, ``guided_backprop``,
            ``deconvolution``, ``guided_gradcam``, ``layer_gradcam``, ``occlusion``,
            ``feature_ablation`` or ``shapley_value_sampling``.
        target (int | str | sequence | None): class by index or name, one for all images or one per
            image; default each image's top class.
        layer (str | nn.Module | None): the layer of ``guided_gradcam`` and ``layer_gradcam``.
        noise_tunnel (str | None): ``smoothgrad``, ``smoothgrad_sq`` or ``vargrad`` around a gradient method,
            with ``nt_samples`` noisy copies of standard deviation ``nt_stdevs``.
        metrics (bool): add captum's ``infidelity`` (Gaussian perturbations, std 0.003) and
            ``sensitivity_max`` (radius 0.02) with ``metric_samples`` samples each.
        seed (int): seeds the random parts (noise tunnel, sampling, metrics): torch's and numpy's
            generators.
        **options: the method's own options (e.g. ``n_steps=32``, ``window=16``).

    Returns:
        AttributionResult: the attributions (``.save(dir)`` writes heat maps, ``.npy`` and JSON).

    Raises:
        IntrospectError: unknown method or option, a layer method without ``layer``, a target out of
            range or unknown, a noise tunnel around a perturbation method, integer inputs.

    Example:
        >>> result = introspect.attribute(model, x, method="integrated_gradients", target="tabby", n_steps=32)
        >>> result.attribution.shape
        torch.Size([1, 3, 224, 224])
    """
    spec = method_spec(method)
    opts = method_options(spec, options)
    x = _check_images(model, images)
    layer_name, layer_module = _check_layer(model, spec, layer)
    _check_noise_tunnel(spec, noise_tunnel, nt_samples, nt_stdevs)
    meta = meta_of(model)
    was_training = model.training
    model.eval()
    try:
        torch.manual_seed(seed)
        np.random.seed(seed)  # captum draws some of its random numbers with numpy (gradient SHAP)
        with torch.no_grad():
            logits = model(x)
        targets = _targets(target, logits, meta.classes, len(x))
        obj = spec.build(model, layer_module)

        def explain(inputs, target=targets):
            if isinstance(inputs, tuple):  # captum's metrics pass inputs as a tuple
                return (explain(inputs[0], target),)
            return _run(spec, obj, inputs, target, opts, noise_tunnel, nt_samples, nt_stdevs)

        with warnings.catch_warnings():  # captum's notes on requires_grad and ReLU hooks: not the user's business
            warnings.filterwarnings("ignore", message=".*(require gradients|backward hooks).*")
            attribution = explain(x)
            scores = _metrics(model, explain, x, attribution, targets, metric_samples, seed) if metrics else None
    finally:
        model.train(was_training)
    return AttributionResult(
        method=spec.name, attribution=attribution.detach().float().cpu(), input=x.detach().cpu(), targets=targets,
        target_names=[meta.class_name(t) for t in targets], options=opts, layer=layer_name,
        noise_tunnel=noise_tunnel, metrics=scores, path=getattr(obj, "last_path", None),
        mean=tuple(meta.mean), std=tuple(meta.std))


def _run(spec: Method, obj, x, targets, opts, noise_tunnel, nt_samples, nt_stdevs) -> torch.Tensor:
    """One attribution of ``x``: the method, in a noise tunnel if asked, upsampled if a layer method."""
    from captum.attr import LayerAttribution, NoiseTunnel

    kwargs = spec.kwargs(x, opts)
    if noise_tunnel is None:
        out = obj.attribute(x, target=targets, **kwargs)
    else:
        out = NoiseTunnel(obj).attribute(x, nt_type=noise_tunnel, nt_samples=nt_samples, stdevs=nt_stdevs,
                                         target=targets, **kwargs)
    if spec.upsample:
        out = LayerAttribution.interpolate(out, tuple(x.shape[-2:]), interpolate_mode=opts["interpolate"])
    return out


def _check_images(model: nn.Module, images) -> torch.Tensor:
    x = image_batch(images)
    if not x.is_floating_point():
        raise IntrospectError(f"attribution needs floating-point inputs, got {x.dtype}; "
                              "gradients and baselines are not defined for integer inputs")
    x = to_model(x, model)
    return x


def _check_layer(model, spec: Method, layer):
    if not spec.layer:
        if layer is not None:
            raise IntrospectError(f"method {spec.name} takes no layer; drop --layer")
        return None, None
    if layer is None:
        raise IntrospectError(f"method {spec.name} needs a layer; give --layer NAME (e.g. the last "
                              "convolutional layer, see `introspect layers`)")
    return resolve_layer(model, layer)


def _check_noise_tunnel(spec: Method, noise_tunnel, nt_samples, nt_stdevs) -> None:
    if noise_tunnel is None:
        return
    if noise_tunnel not in NOISE_TUNNELS:
        raise IntrospectError(f"unknown noise tunnel {noise_tunnel!r}; use one of {', '.join(NOISE_TUNNELS)}")
    if not spec.gradient:
        raise IntrospectError(f"--noise-tunnel wraps gradient methods; {spec.name} is a perturbation method")
    if not isinstance(nt_samples, int) or nt_samples < 1 or not nt_stdevs >= 0:
        raise IntrospectError(f"the noise tunnel needs nt_samples >= 1 and nt_stdevs >= 0, got "
                              f"{nt_samples!r} and {nt_stdevs!r}")


def _targets(target, logits, classes, n: int) -> list[int]:
    """One class index per image: the given one(s) (index or name), or each image's top class."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise IntrospectError(f"attribution needs a classifier whose output is N x classes, got {shape}")
    if target is None or (isinstance(target, (list, tuple)) and not target):
        return [int(i) for i in logits.argmax(1)]
    out = resolve_targets(target, classes, logits.shape[1])
    if len(out) == 1:
        return out * n
    if len(out) != n:
        raise IntrospectError(f"got {len(out)} targets for {n} images; give one target, or one per image")
    return out


def _metrics(model, explain, x, attribution, targets, samples: int, seed: int) -> dict:
    """captum's infidelity and sensitivity_max of the attribution, per image."""
    from captum.metrics import infidelity, sensitivity_max

    def perturb(inputs):
        noise = torch.randn_like(inputs) * 0.003
        return noise, inputs - noise

    torch.manual_seed(seed)
    expanded = attribution.expand_as(x) if attribution.shape[1] == 1 and x.shape[1] != 1 else attribution
    infid = infidelity(model, perturb, x, expanded, target=targets, n_perturb_samples=samples)
    torch.manual_seed(seed)
    sens = sensitivity_max(lambda inp, target=None: explain(inp, target), x, target=targets,
                           n_perturb_samples=samples, perturb_radius=0.02)
    return {"infidelity": [float(v) for v in infid], "sensitivity_max": [float(v) for v in sens],
            "samples": samples}


__all__ = ["attribute", "AttributionResult"]
