"""``introspect filters [MODEL] [--data DIR]``: the first layer's filters, dead filters and aliasing (Fig. 6)."""
from __future__ import annotations

from pathlib import Path

import click

from introspect.plugin import (
    PhaseBars,
    data_folder,
    emit_result,
    model_options,
    open_dataset,
    open_model,
    output_options,
)
from introspect_filters.defaults import HF_CUTOFF, NORM_FRACTION


@click.command("filters")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Folder of images (flat, or one subfolder per class) over which a filter must fire at "
                   "least once to count as alive. Default: the bundled images.")
@click.option("--layer", default=None, metavar="NAME",
              help="The convolution to analyse, e.g. conv1 or features.0. Default: the model's first Conv2d.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Images per forward pass over the data.")
@click.option("--hf-cutoff", type=click.FloatRange(0, 0.5, min_open=True, max_open=True), default=HF_CUTOFF,
              show_default=True, help="High-frequency cutoff: radial frequency in cycles per pixel.")
@click.option("--norm-fraction", type=click.FloatRange(0, 1, max_open=True), default=NORM_FRACTION,
              show_default=True, help="A filter whose norm is below this fraction of the median filter norm "
                                      "is dead ('negligible norm').")
@click.option("--fft-size", type=click.IntRange(min=1), default=None,
              help="Zero-pad the filters to this DFT size for the spectrum. Default: the kernel size.")
@model_options
@output_options("introspect-out/filters")
def filters_command(model, data, layer, batch_size, hf_cutoff, norm_fraction, fft_size, arch, device, trust_pickle,
                    out, as_json):
    """The filters of MODEL's first layer (the paper's Fig. 6), its dead filters and aliasing.

    A filter is dead when it is never active (its output, bias included, is <= 0 at every position
    of every image in --data) or its norm is negligible. For each filter the report gives the share
    of its spectral energy at high frequencies and above the Nyquist frequency of the layer's stride
    (1/(2*stride) cycles per pixel): the energy that aliases when the output is subsampled.

    Writes filters.png (the filter grid, dead filters framed red), spectrum.png (the mean power
    spectrum with the stride's Nyquist band), filters.npy (the weights), spectrum.npy, report.csv (a
    row per filter) and result.json. MODEL is optional: without it the bundled model is used.
    """
    from introspect.plugin import OutputDir
    from introspect_filters.method import first_layer_filters, resolve_conv

    net = open_model(model, arch, device, trust_pickle)
    resolve_conv(net, layer)  # a bad --layer fails before the images are read
    data = data_folder(data)
    images = open_dataset(net, data)
    with OutputDir(out) as od:  # checked before the data pass; nothing written if it fails
        with PhaseBars(lambda phase: "reading images") as bars:
            result = first_layer_filters(net, images, layer=layer, batch_size=batch_size, hf_cutoff=hf_cutoff,
                                         norm_fraction=norm_fraction, fft_size=fft_size, progress=bars)
        files = result.save(od)
    emit_result(result, out, as_json, lambda summary: report_lines(result, summary), extra={"data": str(data)},
                files=files)


def report_lines(result, summary: dict) -> list[str]:
    """The short terminal report: the layer, the dead filters, mean high-frequency and aliasing energy."""
    kh, kw = result.kernel_size
    where = f"{result.alias} ({result.layer})" if result.alias else result.layer
    dead = summary["dead_filters"]
    return [
        f"{where}: {len(result.weights)} filters {kh}x{kw}, stride {result.stride[0]}x{result.stride[1]}, "
        f"{result.images_seen} images",
        f"dead: {result.dead_count} ({summary['never_active']} never active, {summary['negligible_norm']} "
        f"negligible norm)" + (f": {', '.join(map(str, dead))}" if dead else ""),
        f"mean high-frequency energy (radial frequency > {result.hf_cutoff:g} cycles/pixel): "
        f"{result.mean_high_frequency:.3f}",
        f"mean aliasing energy (above the stride's Nyquist {result.nyquist[0]:.3g} cycles/pixel): "
        f"{result.mean_aliasing:.3f}",
    ]
