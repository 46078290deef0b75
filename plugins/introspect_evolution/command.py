"""``introspect evolution CHECKPOINT...``: the paper's Fig. 4 as PNG grids, ``.npy`` projections, CSV, JSON."""
from __future__ import annotations

from pathlib import Path

import click

from introspect.plugin import PhaseBars, data_folder, emit_result, open_dataset, output_options
from introspect_evolution.defaults import DEFAULT_MAPS


def _summary_lines(result) -> list[str]:
    epochs = result.epochs
    lines = [f"{len(epochs)} checkpoints (epochs {', '.join(map(str, epochs))}), {result.images_seen} images"]
    for entry in result.layers:
        mean = " ".join(f"{v:.3g}" for v in entry.mean_activation())
        same = " ".join(f"{v:.0%}" for v in entry.same_image_as_last())
        lines.append(f"{entry.name} ({entry.selection}): mean strongest activation per epoch {mean}; "
                     f"same image as the last epoch {same}")
        for j, channel in enumerate(entry.channels.tolist()):
            act, img = entry.activation[j], entry.image_index[j]
            changes = int((img[1:] != img[:-1]).sum())
            lines.append(f"  map {channel:<4} act {float(act[0]):.4g} (epoch {epochs[0]}) -> {float(act[-1]):.4g} "
                         f"(epoch {epochs[-1]}), image {int(img[-1])}, strongest image changed {changes} times")
    return lines


@click.command("evolution")
@click.argument("checkpoints", nargs=-1, type=click.Path(path_type=Path), metavar="CHECKPOINT...")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Folder of images (flat or one subfolder per class), preprocessed as the checkpoints "
                   "want (input size, normalization). Default: the bundled test images.")
@click.option("--layer", "layers", multiple=True, metavar="NAME",
              help="Layer, by name or alias (conv1, features.12); repeat for several (one block each). "
                   "Default: the last convolutional layer.")
@click.option("--channel", "channels", multiple=True, type=click.IntRange(min=0), metavar="C",
              help="Feature map to follow, the same for every --layer (repeatable; rows in this order). "
                   "Default: the --maps maps with the strongest activation at the last checkpoint.")
@click.option("--maps", type=click.IntRange(min=1), default=DEFAULT_MAPS, show_default=True,
              help="How many feature maps per layer to choose when no --channel is given.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Images per forward pass.")
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda",
              help="Where to run: auto picks CUDA when available.")
@output_options("introspect-out/evolution")
def evolution_command(checkpoints, data, layers, channels, maps, batch_size, device, out, as_json):
    """Feature evolution during training (the paper's Fig. 4): for chosen feature maps of a layer,
    the projection of the strongest activation over a data set at each epoch.

    CHECKPOINT is a checkpoint file or a folder holding epoch_*.pt files (what `introspect train`
    writes; sorted by epoch); give several in column order. All must share one architecture and
    input size. The epoch of each column is the one stored in the checkpoint.

    Writes into --out: evolution_<layer>.png (rows: feature maps, columns: epochs; each tile the
    projection cropped to its receptive field), evolution_<layer>.npy (maps x epochs x C x h x w
    float32 projections), evolution.png (every layer as a block), evolution.csv (layer, map, epoch,
    activation, image, position, box) and result.json. Nothing is written on error or when stopped.

    Example: introspect evolution runs/zf --data val/ --layer conv1 --layer conv5 --maps 6
    """
    from introspect.plugin import OutputDir
    from introspect_evolution.checkpoints import gather
    from introspect_evolution.method import feature_evolution

    data = data_folder(data)

    def images_for(model):
        return open_dataset(model, data)

    gather(list(checkpoints))  # reads only the headers: bad paths fail before any work
    with OutputDir(out) as od:  # checked before the long work; nothing written if it fails
        with PhaseBars() as bars:
            result = feature_evolution(list(checkpoints), images_for, layers=list(layers) or None,
                                       channels=list(channels) or None, maps=maps, batch_size=batch_size,
                                       device=device, progress=bars)
        files = result.save(od)
    emit_result(result, out, as_json, lambda summary: _summary_lines(result), files=files)
