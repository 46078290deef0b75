"""``introspect occlusion [MODEL] [IMAGE]``: the panels of Fig. 7 as PNG, the maps as ``.npy``."""
from __future__ import annotations

from pathlib import Path

import click

from introspect.plugin import (
    FILLS,
    PhaseBars,
    check_output_folder,
    emit_result,
    model_and_inputs,
    model_options,
    note,
    open_images,
    open_model,
    output_options,
)


@click.command("occlusion")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.argument("image", required=False, type=click.Path(path_type=Path))
@click.option("--size", type=click.IntRange(min=1), default=None,
              help="Occluder side in input pixels. Default: the paper's 50 at 224x224, scaled to the model's input.")
@click.option("--stride", type=click.IntRange(min=1), default=None,
              help="Occluder step in input pixels. Default: 10 at 224x224, scaled to the model's input.")
@click.option("--fill", type=click.Choice(FILLS), default="gray", show_default=True,
              help="What the occluder holds: gray (pixel value 0.5), mean (the normalization mean), "
                   "zero (black) or blur (the image blurred).")
@click.option("--target", "targets", multiple=True, metavar="CLASS",
              help="Class to map, by index or name; repeat for several. Default: the top predicted class.")
@click.option("--layer", "layers", multiple=True, metavar="NAME",
              help="Layer for panels (b) and (c), e.g. conv5 or features.12; repeat for several. "
                   "Default: the last convolutional layer.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Occluder positions per call; peak memory grows with it. Default: as many as fit in "
                   "about 512 MB of changed regions (at most 512).")
@click.option("--approximate", is_flag=True,
              help="Cap the growth of the changed region at each convolution and pooling (Krypton's "
                   "projective-field thresholding): faster, approximate; the error is measured and reported.")
@click.option("--tau", type=click.FloatRange(min=0, max=1, min_open=True), default=0.5, show_default=True,
              help="With --approximate: the largest changed region, as a fraction of each map's side.")
@click.option("--rectify/--no-rectify", default=True, show_default=True,
              help="Panel (b) sums the rectified feature map, max(0, x), as the paper's layer-5 maps are; "
                   "--no-rectify sums it before the ReLU (the pre-activation).")
@model_options
@output_options("introspect-out/occlusion")
def occlusion_command(model, image, size, stride, fill, targets, layers, batch_size, approximate, tau, rectify,
                      arch, device, trust_pickle, out, as_json):
    """Occlusion sensitivity of IMAGE (the paper's Fig. 7), all panels from one sweep.

    Slides an occluder over IMAGE and writes, for every position: the probability of each target
    class (d_prob_*.png, prob.npy), the most probable class and its probability (e_label.png,
    label.npy, label_prob.npy) and the total (rectified) activation of the strongest feature map of
    each layer (b_activation_*.png, activation.npy); plus that feature map's deconvnet projection for
    the unoccluded image (c_projection_*.png, projection.npy), the input (a_input.png, input.npy), all
    panels together (figure.png) and result.json, which lists every file. Layers are named as in the
    paper (conv5) where the model has aliases.

    MODEL and IMAGE are optional: without them the bundled model and image are used. A single
    image file given alone is taken as IMAGE (with the bundled model, or --arch).
    """
    from introspect.plugin import IMAGE_EXTENSIONS
    from introspect_occlusion.method import occlusion

    model, rest = model_and_inputs(model, [image])
    if len(rest) > 1:
        raise click.UsageError(f"occlusion takes one IMAGE, got {len(rest)}: {', '.join(map(str, rest))}")
    image = rest[0] if rest else None
    if image is None and model is not None and model.suffix.lower() in IMAGE_EXTENSIONS:
        model, image = None, model

    check_output_folder(out)  # a refused --out fails now, not after the work
    net = open_model(model, arch, device, trust_pickle)
    x, paths = open_images(net, [image] if image else [])

    with PhaseBars(lambda phase: "occluding") as bars:
        result = occlusion(net, x, size=size, stride=stride, fill=fill, targets=list(targets) or None,
                           layers=list(layers) or None, batch_size=batch_size,
                           approximate=tau if approximate else None, rectify=rectify, progress=bars)
    if result.fallback:
        note(f"note: whole forward passes were used ({result.fallback})")
    emit_result(result, out, as_json, lambda summary: _lines(result, summary, fill), extra={"image": str(paths[0])})


def _lines(result, summary: dict, fill: str) -> list[str]:
    py, px = len(result.ys), len(result.xs)
    lines = [f"{py * px} occluder positions ({py} x {px}), size {result.size[0]}, stride {result.stride[0]}, "
             f"fill {fill}, {result.mode} inference, {result.stats['seconds']:.2f} s"]
    for t in summary["targets"]:
        lines.append(f"p({t['name']}): {t['clean_prob']:.3f} unoccluded, {t['min_prob']:.3f} at worst "
                     f"(occluder at {t['most_important_box'][:2]})")
    for layer in summary["layers"]:
        lines.append(f"{layer['name']} map {layer['channel']}: total {result.total_kind} activation "
                     f"{layer['clean_total']:.4g} unoccluded, "
                     f"{layer['min_total']:.4g} .. {layer['max_total']:.4g}")
    if result.approx_error:
        e = result.approx_error
        lines.append(f"approximation (tau {result.tau}): max |dp| {e['prob_max_abs']:.2e}, labels agree at "
                     f"{e['label_agreement']:.0%} of {e['checked_positions']} checked positions")
    return lines
