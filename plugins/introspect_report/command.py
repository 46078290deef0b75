"""``introspect report [MODEL] [DATA_DIR] --out DIR``: the microscope site."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import click

from introspect.plugin import (
    DISTRIBUTED_TIMEOUT,
    PhaseBars,
    emit,
    model_and_inputs,
    model_options,
    model_settings,
    note,
    open_model,
    output_options,
)

_LABELS = {"check": "checking images", "images": "image pages", "filters": "filters (Fig. 6)"}


def _label(phase: str) -> str:
    word, _, layer = phase.partition(" ")
    if word == "mine":
        return f"mining {layer}"
    if word == "project":
        return f"projecting {layer}"
    return _LABELS.get(phase, phase)


def _command_line(ctx: click.Context) -> str:
    """The command as typed, up to option order (every option that differs from its default)."""
    words = ["introspect", ctx.info_name or "report"]
    settings = model_settings()
    if settings.get("weights"):
        words += ["--weights", str(settings["weights"])]
    for key, value in settings.get("arch_args", {}).items():
        words += ["--arch-arg", f"{key}={json.dumps(value)}"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if isinstance(param, click.Argument):
            words += [str(value)] if value is not None else []
        elif value not in (None, False, ()) and value != param.default:
            flag = param.opts[-1] if param.opts[-1].startswith("--") else param.opts[0]
            if value is True:
                words.append(flag)
            else:
                for v in value if isinstance(value, tuple) else (value,):
                    words += [flag, str(v)]
    return " ".join(shlex.quote(w) for w in words)


@click.command("report")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.argument("data_dir", required=False, type=click.Path(path_type=Path))
@click.option("--layers", "layers", multiple=True, metavar="LIST",
              help="Layers to report, by name or alias, comma-separated or repeated (conv1,conv5). "
                   "Default: conv1..conv5 of the bundled models, the stages of other models.")
@click.option("--k", "k", type=click.IntRange(min=1), default=9, show_default=True,
              help="Top images per feature map.")
@click.option("--images", "images", type=click.IntRange(min=1), default=None,
              help="Pages for the first N images only (with occlusion maps). Default: every image.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Images per forward pass.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Processes reading and preprocessing images in parallel.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Use only the first N images of DATA_DIR (sorted order).")
@click.option("--force", is_flag=True,
              help="Recompute everything (reuse nothing of an earlier site) and replace an --out that is not a "
                   "report (files introspect did not write are moved aside to OUT.replaced-TIME, never deleted).")
@click.option("--skip-bad", is_flag=True,
              help="Leave out image files that cannot be read (listed on the index page) instead of stopping.")
@click.option("--timeout", type=click.FloatRange(min=1), default=DISTRIBUTED_TIMEOUT, show_default=True,
              help="Under torchrun: seconds a process waits for the others before it gives up.")
@model_options
@output_options("introspect-out/report")
def report_command(model, data_dir, layers, k, images, batch_size, workers, limit, force, skip_bad, timeout, arch,
                   device, trust_pickle, out, as_json):
    """Build a browsable static site of MODEL over the images in DATA_DIR (open --out/index.html).

    Pages: the model and its layers; per layer, every feature map as the projection of its
    strongest activation (sortable, dead maps marked); per feature map, its top-k images with their
    projections and receptive-field patches (Fig. 2); per image, the top-5 classes, the occlusion
    panels (Fig. 7) and its strongest maps; the first-layer filters (Fig. 6). Beside the pages:
    top.json per layer (as `introspect top` writes it), the occlusion arrays (as `introspect
    occlusion` writes them) and report.json listing every page and file.

    MODEL and DATA_DIR may be left out: the bundled model and images are used (a folder given
    alone is DATA_DIR). A rerun into the same --out reuses what was computed for the same model,
    data and options; the new site replaces the old one only when complete.

    Several processes and machines: launch it with torchrun. Each process mines every N-th batch of
    DATA_DIR for each layer, the top-k are merged exactly (the same site as one process), and rank
    0 computes the projections, image pages and filters and writes --out; the other ranks write and
    print nothing. NCCL is used on GPUs (process i of a node on cuda:i), Gloo with --device cpu.
    If a process fails before or while mining, every process stops with its error.

    \b
      torchrun --nproc-per-node 2 -m introspect.cli report MODEL DATA_DIR --out DIR
    """
    from introspect.plugin import check_ranks, process_group
    from introspect_report.method import report

    if model is not None and data_dir is None and model.is_dir():
        model, data_dir = None, model
    model, rest = model_and_inputs(model, [data_dir])
    data_dir = rest[0] if rest else None
    chosen = [part for value in layers for part in value.split(",") if part.strip()] or None
    with process_group(device, timeout) as group:
        lead = group is None or group.lead
        error = None
        try:
            net = open_model(model, arch, group.device if group else device, trust_pickle)
        except Exception as exc:  # every rank opens the model; one that cannot stops them all
            error = exc
        check_ranks(error, "opening the model")
        if data_dir is None:
            from introspect.plugin import bundled_image_dir

            data_dir = bundled_image_dir()
            if lead:
                note(f"no DATA_DIR given: using the bundled images in {data_dir}")
        bars = PhaseBars(_label) if lead else None
        try:
            built = report(net, data_dir, out=out, layers=chosen, k=k, images=images, batch_size=batch_size,
                           workers=workers, limit=limit, force=force, skip_bad=skip_bad, progress=bars,
                           command=_command_line(click.get_current_context()), distributed=group is not None)
        finally:
            if bars is not None:
                bars.close()
    if not built.written:  # not rank 0: rank 0 writes and prints
        return
    doc = built.to_dict()
    doc["processes"] = processes = 1 if group is None else group.world
    lines = [f"{len(built.layers)} layers, {len(built.images)} image pages, {len(built.pages)} pages, "
             f"{len(built.files)} files in {built.seconds:.1f} s"
             + (f" on {processes} processes" if processes > 1 else "")]
    if built.moved_aside:
        lines.append(f"--force: the files that were in {out} were moved to {built.moved_aside}")
    if built.reused:
        lines.append(f"reused from the previous site: {len(built.reused)} units")
    if built.skipped:
        lines.append(f"skipped {len(built.skipped)} unreadable files: {', '.join(built.skipped)}")
    lines.append(f"open {built.index}")
    emit(doc, as_json, "\n".join(lines))
