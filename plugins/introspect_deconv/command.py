"""The ``introspect deconv`` and ``introspect top`` commands."""
from __future__ import annotations

from pathlib import Path

import click

from introspect.plugin import (
    DISTRIBUTED_TIMEOUT,
    IntrospectError,
    PhaseBars,
    emit,
    model_and_inputs,
    model_options,
    note,
    open_images,
    open_model,
    output_options,
)
from introspect.plugin import PROJECTION_METHODS as METHODS
from introspect.plugin import PROJECTION_MODES as MODES

#: Channel numbers stop here when the layer's own count is unknown: no layer has a million maps.
MAX_CHANNELS = 1 << 20


def parse_channels(values, n_maps: int | None = None, layer: str = "") -> list[int] | None:
    """``("0-3,17", "42")`` -> ``[0, 1, 2, 3, 17, 42]``; nothing given -> None. Every number is
    checked against ``n_maps`` (the layer's feature maps; :data:`MAX_CHANNELS` when unknown) before
    a range is expanded, so ``0-2000000000`` is one line, not a list of two billion numbers."""
    found: list[int] = []
    limit = n_maps if n_maps else MAX_CHANNELS
    for value in values or ():
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                lo, hi = (int(v) for v in part.split("-", 1)) if "-" in part else (int(part),) * 2
                if hi < lo or lo < 0:
                    raise ValueError
            except ValueError:
                raise IntrospectError(
                    f"cannot read channel {part!r}; use numbers and ranges such as 0-15,42"
                ) from None
            if hi >= limit:
                where = f"layer {layer!r}, which has {n_maps} feature maps; use 0..{n_maps - 1}" if n_maps else \
                    f"any layer (channel numbers stop below {MAX_CHANNELS}); use numbers and ranges such as 0-15,42"
                raise IntrospectError(f"channel {hi} does not exist in {where}")
            found.extend(range(lo, hi + 1))
    return sorted(set(found)) if found else None


def _maps_of(module) -> int | None:
    """The number of feature maps a layer gives, where the module says it (conv, batch norm)."""
    count = getattr(module, "out_channels", None) or getattr(module, "num_features", None)
    return int(count) if isinstance(count, int) and count > 0 else None


_PHASES = {"mine": "mining", "project": "projecting"}


def _bars(layer: str, share: str = "") -> PhaseBars:
    """One bar per phase of ``top_k``; ``share`` names the part of the data set this process mines."""
    return PhaseBars(lambda phase: f"{_PHASES.get(phase, phase)} {layer}{share if phase == 'mine' else ''}")


@click.command("deconv")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("--layer", "layers", multiple=True, metavar="NAME",
              help="Layer to project, by name or alias (conv5, features.12); repeatable. "
                   "Default: the last convolutional layer.")
@click.option("--channel", "channels", multiple=True, type=click.IntRange(min=0), metavar="C",
              help="Feature map to project (repeatable). Default: the --top-maps strongest maps of each image.")
@click.option("--top-maps", "--maps", "top_maps", type=click.IntRange(min=1), default=9, show_default=True,
              help="How many of the most strongly activated maps to project when no --channel is given.")
@click.option("--mode", type=click.Choice(MODES), default="max", show_default=True,
              help="max: keep only the strongest activation of each map (the paper's default); "
                   "map: project the whole feature map.")
@click.option("--method", type=click.Choice(METHODS), default="auto", show_default=True,
              help="auto: the fast windowed deconvnet for plain conv/pool chains, autograd otherwise.")
@click.option("--activation-rule", "activation_rules", multiple=True, metavar="TYPE=RULE",
              help="The deconvnet's rule for one activation type (repeatable), e.g. silu=gradient or "
                   "gelu=pass; RULE is deconvnet, guided, gradient or pass (gate=through lets the signal "
                   "into squeeze-and-excitation gates). Default: the README's rules table.")
@model_options
@output_options("introspect-out/deconv")
def deconv_command(model, images, layers, channels, top_maps, mode, method, activation_rules, arch, device,
                   trust_pickle, out, as_json):
    """Project feature maps of MODEL for each IMAGE back to pixel space (deconvnet, Zeiler & Fergus
    Sec. 2.1).

    MODEL and IMAGE may be left out: the bundled ZFNet and a bundled image are used (with --arch and
    no model file, the first argument may be an image). Writes <layer>.png (each projection beside
    its receptive-field patch), <layer>.npy (N x C x H x W float32 projections), result.json (layer,
    channel, position, activation and box of each projection) and input.npy (the exact preprocessed
    input) into --out. Contrast normalization is passed through on the way down; BatchNorm is
    applied as its transpose.
    """
    from introspect.plugin import (
        IMAGE_EXTENSIONS,
        OutputDir,
        choice_note,
        last_conv_layer,
        parse_activation_rules,
        resolve_layer,
    )
    from introspect_deconv.figure import save_projections
    from introspect_deconv.projection import project

    rule = parse_activation_rules("deconvnet", activation_rules)

    model, images = model_and_inputs(model, images)
    if arch is not None and model is not None and model.suffix.lower() in IMAGE_EXTENSIONS:
        model, images = None, (model, *images)  # `deconv --arch vgg11 cat.jpg`: no model file
    net = open_model(model, arch, device, trust_pickle)
    x, paths = open_images(net, images)
    names, seen = [], set()
    for layer in layers or (last_conv_layer(net),):
        canonical, _ = resolve_layer(net, layer)
        if canonical not in seen:
            seen.add(canonical)
            names.append(canonical)
    results = []
    with OutputDir(out) as od:
        with PhaseBars(lambda phase: "projecting") as bars:
            bars("project", 0, len(names))
            for name in names:
                result = project(net, x, layer=name, channels=list(channels) or None, mode=mode,
                                 maps=top_maps, method=method, rule=rule)
                result.image_names = [str(p) for p in paths]
                results.append(result)
                bars("project", len(results), len(names))
        files = [p.name for p in save_projections(results, od)]
    activations: dict[str, str] = {}
    for r in results:
        activations.update(r.activation_rules)
    message = choice_note(activations, rule)
    if message:
        note(message)
    doc = {"out": str(out), "files": files, "layers": [r.to_dict() for r in results]}
    lines = []
    for r in results:
        for row in r.to_dict()["projections"]:
            lines.append(f"{r.name} ch {row['channel']:<4} act {row['activation']:<10.4g} image {row['image']} "
                         f"at {tuple(row['position'])} box {tuple(row['box'])}")
    lines.append(f"wrote {', '.join(files)} to {out}")
    emit(doc, as_json, "\n".join(lines))


@click.command("top")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("data_dir", required=False, type=click.Path(path_type=Path))
@click.option("--layer", default=None, metavar="NAME",
              help="Layer to mine, by name or alias (conv5). Default: the last convolutional layer.")
@click.option("--k", "k", type=click.IntRange(min=1), default=9, show_default=True,
              help="Images kept per feature map (each image at most once per map).")
@click.option("--channels", "channels", multiple=True, metavar="LIST",
              help="Feature maps to mine: numbers and ranges such as 0-15,42 (repeatable). Default: all.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Images per forward pass (per process under torchrun).")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Processes reading and preprocessing images in parallel (per process under torchrun).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Use only the first N images of the folder (sorted order; of the whole folder under torchrun).")
@click.option("--method", type=click.Choice(METHODS), default="auto", show_default=True,
              help="auto: the fast windowed deconvnet for plain conv/pool chains, autograd otherwise.")
@click.option("--timeout", type=click.FloatRange(min=1), default=DISTRIBUTED_TIMEOUT, show_default=True,
              help="Under torchrun: seconds a process waits for the others before it gives up.")
@model_options
@output_options("introspect-out/top")
def top_command(model, data_dir, layer, k, channels, batch_size, workers, limit, method, timeout, arch, device,
                trust_pickle, out, as_json):
    """Find the top-k images of each feature map over DATA_DIR and project them (the paper's Fig. 2).

    DATA_DIR is a folder of images, flat or one subfolder per class. The folder is streamed once
    (memory does not grow with its size); then the winners are projected. Writes overview.png,
    channels/chNNN.png (projections beside image patches, per map), top.json, top.npy (projections,
    maps x k x C x h x w) and input.npy (the preprocessed input in the same windows). Stopping it
    (Ctrl-C) writes nothing.

    Several processes and machines: launch it with torchrun. Each process mines every N-th batch of
    the folder, the top-k are merged exactly (the same result as one process), and rank 0 projects
    the winners, writes --out and prints the result; the other ranks print nothing. NCCL is used on
    GPUs (process i of a node on cuda:i), Gloo with --device cpu. Every node must see DATA_DIR and
    MODEL at the same path. If a process fails, every process stops with its error.

    \b
      torchrun --nproc-per-node 4 -m introspect.cli top MODEL DATA_DIR --out DIR
      torchrun --nnodes 2 --node-rank R --master-addr HOST --master-port 29500 \\
               --nproc-per-node 8 -m introspect.cli top MODEL DATA_DIR --out DIR
    """
    from introspect.plugin import process_group

    model, rest = model_and_inputs(model, [data_dir])
    if len(rest) != 1:
        raise click.UsageError("Missing argument 'DATA_DIR'." if not rest else "top takes one DATA_DIR")
    data_dir = rest[0]
    options = dict(k=k, batch_size=batch_size, workers=workers, method=method, limit=limit)
    with process_group(device, timeout) as group:
        lead = group is None or group.rank == 0
        found = _mine_folder(model, data_dir, layer, channels, arch, group.device if group else device,
                             trust_pickle, out, group, options)
    if not lead:
        return
    result, files = found
    doc = result.to_dict()
    doc["out"] = str(out)
    doc["processes"] = processes = 1 if group is None else group.world
    where = f" on {processes} processes" if processes > 1 else ""
    emit(doc, as_json, f"{result.name}: top-{k} of {len(result.channels)} maps over {result.images_seen} images"
                       f"{where}; wrote {len(files)} files to {out}")


def _mine_folder(model, data_dir, layer, channels, arch, device, trust_pickle, out, group, options: dict):
    """The work of ``introspect top`` in one process (one rank of ``group``, or alone): ``(TopK,
    files)`` on rank 0, None on the others. A setup error on any rank (an unwritable --out on
    rank 0, ...) stops every rank before the long work."""
    from contextlib import ExitStack

    from introspect.plugin import OutputDir, check_ranks, display_name, last_conv_layer, open_dataset, resolve_layer
    from introspect_deconv.top import top_k

    lead = group is None or group.rank == 0
    with ExitStack() as stack:
        error = None
        try:
            net = open_model(model, arch, device, trust_pickle)
            data = open_dataset(net, data_dir)
            name, module = resolve_layer(net, layer if layer is not None else last_conv_layer(net))
            chosen = parse_channels(channels, _maps_of(module), name)
            od = stack.enter_context(OutputDir(out)) if lead else None  # before the long work
        except Exception as exc:
            error = exc
        check_ranks(error)
        share = "" if group is None else f" (the share of rank 0 of {group.world})"
        bars = _bars(display_name(net, name), share) if lead else None
        try:
            result = top_k(net, data, layer=name, channels=chosen, progress=bars, distributed=group is not None,
                           **options)
        finally:
            if bars is not None:
                bars.close()
        if not lead:
            return None
        from introspect.plugin import choice_note

        message = choice_note(result.activation_rules)
        if message:
            note(message)
        note(f"writing {len(result.channels)} figures to {out}")
        return result, result.save(od)
