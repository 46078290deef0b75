"""``introspect attribute [MODEL] [IMAGE]... --method NAME``: captum's methods, heat maps and arrays."""
from __future__ import annotations

from pathlib import Path

import click

from introspect.plugin import emit_result, model_and_inputs, model_options, open_images, open_model, output_options
from introspect_attribute.table import METHODS, NOISE_TUNNELS


def _methods_help() -> str:
    lines = []
    for m in METHODS.values():
        opts = ", ".join(f"{k}={o.default}" for k, o in m.options.items())
        extra = " (needs --layer)" if m.layer else ""
        lines.append(f"{m.name}: {m.title}{extra}" + (f" [options: {opts}]" if opts else ""))
    return "; ".join(lines)


@click.command("attribute")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("--method", "method", required=True, metavar="NAME", help="The attribution method: " + _methods_help())
@click.option("--opt", "opts", multiple=True, metavar="NAME=VALUE",
              help="An option of the method (see --method), e.g. --opt n_steps=32; repeat for several.")
@click.option("--target", "targets", multiple=True, metavar="CLASS",
              help="Class to explain, by index or name: one for all images or one per image. Default: each "
                   "image's top predicted class.")
@click.option(
    "--layer", default=None, metavar="NAME", help="The layer of a layer method (guided_gradcam, layer_gradcam)."
)
@click.option("--noise-tunnel", type=click.Choice(NOISE_TUNNELS), default=None,
              help="Wrap a gradient method in captum's NoiseTunnel.")
@click.option("--nt-samples", type=click.IntRange(min=1), default=10, show_default=True,
              help="Noisy copies per image in the noise tunnel.")
@click.option("--nt-stdevs", type=click.FloatRange(min=0), default=0.1, show_default=True,
              help="Standard deviation of the noise tunnel's noise (input units).")
@click.option("--metrics", is_flag=True,
              help="Add captum's infidelity and sensitivity_max of the attribution to result.json.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random parts.")
@model_options
@output_options("introspect-out/attribute")
def attribute_command(model, images, method, opts, targets, layer, noise_tunnel, nt_samples, nt_stdevs, metrics,
                      seed, arch, device, trust_pickle, out, as_json):
    """Attributions of IMAGE(s) by one of captum's methods: signed and absolute heat maps over each
    image with a colour bar (signed_<i>.png, absolute_<i>.png), attribution.npy, input.npy and
    result.json.

    MODEL and IMAGE are optional: without them the bundled model and image are used. Image files
    given alone are taken as IMAGEs (with the bundled model, or --arch).
    """
    from introspect.plugin import IMAGE_EXTENSIONS, IntrospectError
    from introspect_attribute.method import attribute
    from introspect_attribute.table import method_options, method_spec

    spec = method_spec(method)  # unknown names fail before any model is loaded
    options = {}
    for item in opts:
        name, sep, value = item.partition("=")
        if not sep:
            raise IntrospectError(f"--opt takes NAME=VALUE, got {item!r}; e.g. --opt n_steps=32")
        options[name.strip()] = value.strip()
    method_options(spec, options)
    if spec.layer and layer is None:
        raise IntrospectError(f"method {spec.name} needs a layer; give --layer NAME (see `introspect layers`)")
    model, images = model_and_inputs(model, list(images))
    if model is not None and model.suffix.lower() in IMAGE_EXTENSIONS:
        model, images = None, [model, *images]
    net = open_model(model, arch, device, trust_pickle)
    x, paths = open_images(net, images)
    result = attribute(net, x, method=method, target=list(targets) or None, layer=layer, noise_tunnel=noise_tunnel,
                       nt_samples=nt_samples, nt_stdevs=nt_stdevs, metrics=metrics, seed=seed, **options)

    def lines(summary):
        head = f"{spec.name}" + (f" in a {noise_tunnel} noise tunnel" if noise_tunnel else "") + \
            (f" ({result.path} path)" if result.path else "")
        rows = [head]
        for p, img in zip(paths, summary["images"]):
            rows.append(f"{p.name}: target {img['target_name']} ({img['target']}), sum {img['sum']:.4g}, "
                        f"range {img['min']:.3g} .. {img['max']:.3g}")
        if summary["metrics"]:
            m = summary["metrics"]
            rows.append("infidelity " + ", ".join(f"{v:.3g}" for v in m["infidelity"]) +
                        "; sensitivity_max " + ", ".join(f"{v:.3g}" for v in m["sensitivity_max"]))
        return rows

    emit_result(result, out, as_json, lines, extra={"image_paths": [str(p) for p in paths]})
