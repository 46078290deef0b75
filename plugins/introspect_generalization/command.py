"""``introspect generalization [MODEL] DATA``: the paper's Table 7 for a new data set."""
from __future__ import annotations

from pathlib import Path

import click

from introspect.plugin import (
    IntrospectError,
    PhaseBars,
    check_output_folder,
    emit,
    model_options,
    open_dataset,
    open_model,
    output_options,
)
from introspect_generalization.defaults import CLASSIFIERS

_LABELS = {"features": "features", "classifiers": "classifiers"}




def _folder(path: Path, what: str) -> Path:
    if not path.exists():
        raise IntrospectError(f"{what} folder not found: {path}; give a folder with one subfolder per class")
    if not path.is_dir():
        raise IntrospectError(f"{what} {path} is a file, not a folder; give a folder with one subfolder per class")
    return path


@click.command("generalization")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.argument("data", required=False, type=click.Path(path_type=Path))
@click.option("--per-class", "per_class", multiple=True, type=click.IntRange(min=1), metavar="N",
              help="Training images per class; repeat for several settings (one table column each). "
                   "Default: 15 and 30, the paper's Caltech-101 sizes.")
@click.option("--layer", "layers", multiple=True, metavar="NAME",
              help="Layer to probe, e.g. conv3 or features.8; repeat for several. Default: the paper's "
                   "layers 1..7 (conv1..conv5, fc6, fc7), or every Conv2d/Linear but the output layer.")
@click.option("--classifier", "classifiers", multiple=True, type=click.Choice(CLASSIFIERS),
              help="softmax (multinomial logistic regression) or svm (one-vs-rest linear SVM, squared "
                   "hinge); repeat for both. Default: both.")
@click.option("--test", "test_dir", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="A test folder with class subfolders named as in DATA (matched by name; it may have "
                   "fewer). Default: the images of DATA outside the largest training set (the same test "
                   "images for every --per-class).")
@click.option("--repeats", type=click.IntRange(min=1), default=1, show_default=True,
              help="Random training sets per setting; the table shows mean ± std.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random training sets.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Images per forward pass.")
@click.option("--C", "C", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Inverse L2 regularization strength of both classifiers (as in sklearn).")
@click.option("--pool", type=click.IntRange(min=1), default=None, metavar="N",
              help="Average-pool convolutional maps to N x N before flattening. Default: only maps with "
                   "more than --max-dim values, to the largest square that fits.")
@click.option("--max-dim", type=click.IntRange(min=1), default=16384, show_default=True,
              help="Largest feature vector kept unpooled when --pool is not given.")
@click.option("--rectify/--no-rectify", default=True, show_default=True,
              help="Read max(0, x) of each layer's output (the paper's features follow the ReLU).")
@click.option("--pixels", is_flag=True, help="Add a baseline row: the same classifiers on the input pixels.")
@click.option("--max-iter", type=click.IntRange(min=1), default=500, show_default=True,
              help="Most L-BFGS iterations per classifier.")
@model_options
@output_options("introspect-out/generalization")
def generalization_command(model, data, per_class, layers, classifiers, test_dir, repeats, seed, batch_size, C,
                           pool, max_dim, rectify, pixels, max_iter, arch, device, trust_pickle, out, as_json):
    """Feature generalization (the paper's Table 7): linear classifiers on each layer of MODEL.

    Keeps MODEL fixed and, for every layer, trains a softmax and a linear SVM on that layer's
    features of a few images per class of DATA (a folder with one subfolder per class), then tests
    them on the other images (or on --test DIR). Prints the table (rows: layers, columns:
    classifier x images per class) and writes table.md, accuracy.csv, accuracy.npy (layers x
    classifiers x settings), accuracy_std.npy, accuracies.npy (per repeat), splits.json,
    result.json, accuracy.png, table.png and figure.png.

    MODEL is optional: with DATA alone the bundled model is used.
    """
    from introspect_generalization.method import PAPER_PER_CLASS, feature_generalization

    if data is None:
        if model is None:
            raise IntrospectError("no DATA folder given; pass a folder with one subfolder per class")
        model, data = None, model
    _folder(data, "DATA")
    if test_dir is not None:
        _folder(test_dir, "--test")
    check_output_folder(out)  # a refused --out fails now, not after the work
    net = open_model(model, arch, device, trust_pickle)
    train_set = open_dataset(net, data)
    test_set = open_dataset(net, test_dir) if test_dir is not None else None
    bars = PhaseBars(lambda stage: _LABELS.get(stage, stage))
    try:
        result = feature_generalization(
            net, train_set, test_dataset=test_set, layers=list(layers) or None,
            per_class=list(per_class) or PAPER_PER_CLASS, classifiers=list(classifiers) or CLASSIFIERS,
            repeats=repeats, seed=seed, batch_size=batch_size, C=C, max_iter=max_iter, rectify=rectify, pool=pool,
            max_dim=max_dim, pixels=pixels, progress=bars)
    finally:
        bars.close()
    files = result.save(out)
    summary = result.to_dict()
    summary.update(data=str(data), test=str(test_dir) if test_dir else None, out=str(out),
                   files=sorted(p.name for p in files))
    from introspect_generalization.figure import text_table

    best = result.best()
    text = "\n".join([text_table(result),
                      f"best: {best['classifier']} on {best['layer']} with {best['per_class']}/class: "
                      f"{100 * best['accuracy']:.1f}%",
                      f"wrote {len(files)} files to {out}"])
    emit(summary, as_json, text)
