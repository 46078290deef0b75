"""A complete third-party introspect plugin: guided backpropagation.

It adds a method to the Python API (``introspect.guided_backprop``) and a command to the CLI
(``introspect guided [MODEL] [IMAGE]``), using only introspect's public pieces: the core's
``apply_rule(model, "guided")``, the shared CLI options and helpers, and the render helpers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import torch

from introspect import hookimpl
from introspect.plugin import apply_rule, output_folder, to_uint8, written


@dataclass
class GuidedResult:
    """Guided-backprop saliency: ``maps`` is ``N x C x H x W``, ``targets`` the class per image."""

    maps: torch.Tensor
    targets: list[int]

    def to_dict(self) -> dict:
        return {"method": "guided_backprop", "targets": self.targets, "shape": list(self.maps.shape)}

    def save(self, out) -> list[Path]:
        """Write ``guided.npy``, ``guided.png`` (the first image's map) and ``result.json`` into ``out``."""
        with output_folder(out) as od:
            od.save_npy("guided.npy", self.maps.cpu().numpy())
            od.save_png("guided.png", to_uint8(self.maps[0].cpu(), "symmetric"))
            od.save_json("result.json", self.to_dict())
        return written(od, ["guided.npy", "guided.png", "result.json"])


def guided_backprop(model: torch.nn.Module, images: torch.Tensor, *, targets=None) -> GuidedResult:
    """Guided backpropagation of each image's target logit to its pixels.

    Args:
        model (nn.Module): a classifier in eval mode.
        images (Tensor): ``N x C x H x W`` preprocessed images.
        targets (list[int] | None): a class per image; default: each image's top prediction.

    Returns:
        GuidedResult: the saliency maps, ``N x C x H x W``.

    Example:
        >>> result = introspect.guided_backprop(model, images)
        >>> result.maps.shape
        torch.Size([2, 3, 224, 224])
    """
    x = images.detach().clone().requires_grad_(True)
    with apply_rule(model, "guided"):
        logits = model(x)
        if targets is None:
            targets = logits.argmax(1).tolist()
        picked = logits[torch.arange(len(targets)), torch.as_tensor(targets)]
        (grad,) = torch.autograd.grad(picked.sum(), x)
    return GuidedResult(grad.detach(), [int(t) for t in targets])


@hookimpl
def register_methods(register):
    register("guided_backprop", guided_backprop, "Guided backpropagation saliency (Springenberg et al. 2015)")


@hookimpl
def register_commands(cli):
    from introspect.plugin import OutputDir, emit, model_options, open_images, open_model, output_options

    @click.command("guided")
    @click.argument("model", required=False, type=click.Path(path_type=Path))
    @click.argument("image", required=False, type=click.Path(path_type=Path))
    @click.option("--target", type=int, default=None, help="Class index (default: the top prediction).")
    @model_options
    @output_options("introspect-out/guided")
    def guided(model, image, target, arch, device, trust_pickle, out, as_json):
        """Guided-backprop saliency of IMAGE for the target class, as guided.png and guided.npy."""
        net = open_model(model, arch, device, trust_pickle)
        x, _ = open_images(net, [image] if image else [])
        result = guided_backprop(net, x, targets=None if target is None else [target])
        with OutputDir(out) as od:
            od.save_npy("input.npy", x.cpu().numpy())
            files = result.save(od)
        emit(result.to_dict(), as_json, f"guided backprop for class {result.targets[0]} written to {out} "
                                        f"({len(files) + 1} files)")

    cli.add_command(guided)
