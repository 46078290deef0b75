"""``introspect invariance [MODEL] [IMAGE]...``: the curves of Fig. 5 as PNG, CSV, ``.npy`` and JSON."""
from __future__ import annotations

import json
import math
from pathlib import Path

import click

from introspect.plugin import (
    FILLS,
    IntrospectError,
    PhaseBars,
    bundled_image_dir,
    check_output_folder,
    emit_result,
    model_and_inputs,
    model_options,
    note,
    open_images,
    open_model,
    output_options,
)

#: Bundled images used when none is given (the paper used 5).
DEFAULT_IMAGES = 5
MAX_VALUES = 10000


def parse_values(values: str | None, span: str | None) -> list[float] | None:
    """``--values A,B,C`` or ``--range START:STOP:STEP`` (STOP included when the steps land on it)."""
    if values is not None and span is not None:
        raise IntrospectError("give either --values or --range, not both")
    if values is not None:
        try:
            out = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise IntrospectError(f"--values {values!r} is not a comma-separated list of numbers; "
                                  "e.g. --values -8,-4,0,4,8") from None
        if not out or not all(math.isfinite(v) for v in out):
            raise IntrospectError(f"--values {values!r} needs finite numbers; e.g. --values -8,-4,0,4,8")
        return out
    if span is None:
        return None
    parts = span.split(":")
    try:
        start, stop, step = (float(p) for p in parts) if len(parts) == 3 else (None, None, None)
    except ValueError:
        start = None
    if start is None or not all(math.isfinite(v) for v in (start, stop, step)):
        raise IntrospectError(f"--range {span!r} must be START:STOP:STEP numbers; e.g. --range -60:60:10")
    if step == 0 or (stop - start) * step < 0:
        raise IntrospectError(f"--range {span!r}: STEP must be non-zero and go from START towards STOP; "
                              "e.g. --range -60:60:10 or --range 360:0:-30")
    count = int(math.floor((stop - start) / step + 1e-9)) + 1
    if count > MAX_VALUES:
        raise IntrospectError(f"--range {span!r} gives {count} values (at most {MAX_VALUES}); use a larger STEP")
    return [round(start + k * step, 12) for k in range(count)]


def _inputs(model, images):
    """MODEL and IMAGE... as given; a lone first argument that is an image file is an IMAGE."""
    from introspect.plugin import IMAGE_EXTENSIONS

    images = list(images)
    if model is not None and model.suffix.lower() in IMAGE_EXTENSIONS:
        model, images = None, [model, *images]
    return model, images


def _bundled_targets(paths, classes) -> list[str] | None:
    """The true classes of bundled images (``labels.json``), when the model has those class names."""
    labels_file = bundled_image_dir() / "labels.json"
    if not labels_file.exists() or not classes:
        return None
    labels = json.loads(labels_file.read_text(encoding="utf-8"))
    names = [labels.get(p.name) for p in paths]
    known = {str(c).lower() for c in classes}
    return names if all(n is not None and n.lower() in known for n in names) else None


@click.command("invariance")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, type=click.Path(path_type=Path), metavar="[IMAGE]...")
@click.option("--transform", default="translate", show_default=True, metavar="translate|scale|rotate",
              help="translate: vertical shift in input pixels (+ is down); scale: zoom factor about the centre; "
                   "rotate: degrees counter-clockwise about the centre.")
@click.option("--values", "values", default=None, metavar="A,B,C",
              help="Transformation values, comma-separated. Default: the paper's range scaled to the input "
                   "(translate -60..60 px by 10 at 224, i.e. -9..9 by 1 at 32; scale 1..1.8 by 0.1; "
                   "rotate 0..360 by 10).")
@click.option("--range", "span", default=None, metavar="START:STOP:STEP",
              help="Transformation values from START to STOP (included when a step lands on it) by STEP, "
                   "e.g. -60:60:10. Instead of --values.")
@click.option("--layer", "layers", multiple=True, metavar="NAME",
              help="Layer whose feature vector is compared, e.g. conv1 or features.0; repeat for several. "
                   "Default: the paper's layers 1 and 7 (conv1 and fc7; on other models the first Conv2d "
                   "and the penultimate Linear layer).")
@click.option("--target", "targets", multiple=True, metavar="CLASS",
              help="True class of each image, by index or name: once for all images, or once per image in "
                   "order. Default: the top class of each untransformed image (the bundled images' labels "
                   "when they are used).")
@click.option("--fill", type=click.Choice(FILLS), default="mean", show_default=True,
              help="What pixels uncovered by the transformation hold: mean (the normalization mean, 0 in the "
                   "model's input), gray (pixel value 0.5), zero (black) or blur (the image blurred).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Transformed images per forward pass; peak memory grows with it.")
@model_options
@output_options("introspect-out/invariance")
def invariance_command(model, images, transform, values, span, layers, targets, fill, batch_size,
                       arch, device, trust_pickle, out, as_json):
    """Invariance of features and output to a transformation of IMAGE... (the paper's Fig. 5).

    Transforms every IMAGE by every value (vertical translation, scale or rotation, about the centre)
    and writes, against the value: the Euclidean distance between the feature vectors of the original
    and the transformed image at each layer (distance_<layer>.png, one curve per image), the
    probability of each image's true class (probability.png), the paper-like row of example images and
    plots (figure.png), invariance.csv (one row per image and value: image, value, distance per layer,
    probability, label), distance.npy (N x V x L), prob.npy and label.npy (N x V), values.npy,
    norm.npy (N x L, norms of the original feature vectors), input.npy and result.json.

    MODEL and IMAGE are optional: without them the bundled model and 5 bundled images (with their
    true classes) are used. A single image file given alone is taken as IMAGE.
    """
    from introspect.plugin import meta_of
    from introspect_invariance.method import invariance
    from introspect_invariance.transforms import check_transform, default_values

    check_transform(transform)
    parsed = parse_values(values, span)
    model, paths = _inputs(*model_and_inputs(model, images))
    check_output_folder(out)  # a refused --out fails now, not after the work
    net = open_model(model, arch, device, trust_pickle)
    given = list(targets) or None
    if not paths:
        paths = sorted(bundled_image_dir().glob("*.png"))[:DEFAULT_IMAGES]
        note(f"no IMAGE given: using {len(paths)} bundled images")
        if given is None:
            given = _bundled_targets(paths, meta_of(net).classes)
            if given is not None:
                note("targets: the bundled images' true classes (labels.json)")
    x, paths = open_images(net, paths)
    grid_values = parsed if parsed is not None else default_values(transform, tuple(x.shape[-2:])).tolist()
    with PhaseBars(lambda phase: f"{transform} x {len(grid_values)}") as bars:
        result = invariance(net, x, transform=transform, values=grid_values, layers=list(layers) or None,
                            targets=given, fill=fill, batch_size=batch_size, names=[p.stem for p in paths],
                            progress=bars)
    emit_result(result, out, as_json, lambda summary: _lines(result, summary),
                extra={"images_files": [str(p) for p in paths]})


def _lines(result, summary) -> list[str]:
    v = result.values
    lines = [f"{result.transform}: {len(v)} values from {float(v.min()):g} to {float(v.max()):g} {result.unit}, "
             f"{result.distance.shape[0]} images, {result.stats['passes']} passes, {result.stats['seconds']:.2f} s"]
    near, far, unit = summary["nearest_value"], summary["farthest_value"], result.unit
    for i, layer in enumerate(summary["layers"]):
        lines.append(f"{result.layer_title(i)} ({layer['name']}): distance / norm "
                     f"{layer['mean_relative_distance_at_nearest']:.3f} at {near:g} {unit}, "
                     f"{layer['mean_relative_distance_at_farthest']:.3f} at {far:g} {unit} (mean over images)")
    which = "true class" if result.targets_given else "top class"
    for image in summary["images"]:
        lines.append(f"{image['name']}: p({image['target_name']}) [{which}] {image['clean_prob']:.3f} original, "
                     f"{image['min_prob']:.3f} .. {image['max_prob']:.3f}; label kept at {image['label_kept']:.0%}")
    return lines
