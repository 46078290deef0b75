"""``introspect correspondence``: the paper's Table 1 for your model, images and parts."""
from __future__ import annotations

from pathlib import Path

import click

from introspect.plugin import (
    FILLS,
    PhaseBars,
    check_output_folder,
    emit,
    model_and_inputs,
    model_options,
    note,
    open_model,
    output_options,
)


@click.command("correspondence")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, type=click.Path(path_type=Path), metavar="IMAGES...")
@click.option("--parts", "parts_file", required=True, type=click.Path(path_type=Path),
              help="JSON (or YAML, with PyYAML) file: part name -> [y0, x0, y1, x1] for all images, a list "
                   "of boxes (one per IMAGE, in order) or {image file name: box}; end-exclusive boxes in "
                   "each image's own pixels.")
@click.option("--layer", "layers", multiple=True, metavar="L",
              help="Layer name or alias; repeat for several columns. Default: relu5 and relu7 (the "
                   "paper's layer 5 and 7 outputs) for the bundled models, else the last conv layer "
                   "(after its ReLU) and the last-but-one linear layer.")
@click.option("--random", "random_trials", type=click.IntRange(min=0), default=10, show_default=True,
              help="Random-mask trials per part for the control row (0: no random row).")
@click.option("--fill", type=click.Choice(FILLS), default="gray", show_default=True,
              help="What the masked box is filled with (the occlusion convention).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random mask positions.")
@click.option("--tol", type=click.FloatRange(min=0), default=1e-5, show_default=True,
              help="A change |eps| <= tol x max|feature| of the image counts as no change (sign 0), absorbing "
                   "float rounding; 0 for exact signs.")
@click.option("--batch-size", type=click.IntRange(min=2), default=64, show_default=True,
              help="Images per forward pass.")
@model_options
@output_options("introspect-out/correspondence")
def correspondence_command(model, images, parts_file, layers, random_trials, fill, seed, tol, batch_size,
                           arch, device, trust_pickle, out, as_json):
    """Correspondence analysis (Zeiler & Fergus 2014, Sec. 4.3, Table 1).

    Masks the same part (e.g. an eye) in every IMAGE and measures how consistently the feature
    vector at each layer changes: the Hamming distance between the sign patterns of the changes
    eps_i = x_i - x~_i of two images, divided by the feature length, mean +- std over all pairs of
    distinct images. Lower means a more consistent change, i.e. a tighter correspondence. The
    "random" row masks random boxes of the same sizes instead (the control).

    Prints the table and writes table.md, result.json, input.npy, the per-pair matrices (.npy),
    boxes.png (the images with their part boxes) and pairs.png into --out.

    \b
    Example:
      introspect correspondence dogs.pt dog1.jpg dog2.jpg dog3.jpg --parts parts.json
      with parts.json: {"nose": [[120, 100, 160, 150], [90, 80, 130, 125], [100, 95, 140, 140]]}
    """
    from introspect_correspondence.method import correspondence

    model, images = model_and_inputs(model, images)
    if not images:
        raise click.UsageError("Missing argument 'IMAGES...'.")
    check_output_folder(out)  # a refused --out fails now, not after the work
    net = open_model(model, arch, device, trust_pickle)
    with PhaseBars() as bars:
        result = correspondence(net, list(images), parts=parts_file, layers=list(layers) or None,
                                random_trials=random_trials, fill=fill, seed=seed, tol=tol, batch_size=batch_size,
                                progress=bars)
    files = result.save(out)
    emit(result.to_dict(), as_json, result.table())
    note(f"wrote {len(files)} files to {out}")
