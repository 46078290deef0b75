"""Correspondence analysis (Zeiler & Fergus 2014, Sec. 4.3, Table 1): the bundled plugin.

Python::

    result = introspect.correspondence(model, images, parts={"nose": [9, 8, 15, 13]}, layers=["relu5", "relu7"])
    print(result.table())

Command line::

    introspect correspondence MODEL IMAGE... --parts parts.json [--layer L ...] [--random N]

The modules: :mod:`~introspect_correspondence.measure` (sign patterns, Hamming distances and the
paper's Delta), :mod:`~introspect_correspondence.parts` (the parts format),
:mod:`~introspect_correspondence.method` (the analysis and its result),
:mod:`~introspect_correspondence.figure` (the pictures) and :mod:`~introspect_correspondence.command`
(the CLI).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from introspect.plugin import hookimpl, lazy_exports

if TYPE_CHECKING:
    from introspect_correspondence.measure import delta as delta
    from introspect_correspondence.measure import hamming_matrix as hamming_matrix
    from introspect_correspondence.measure import normalized_hamming as normalized_hamming
    from introspect_correspondence.measure import pair_stats as pair_stats
    from introspect_correspondence.measure import sign_pattern as sign_pattern
    from introspect_correspondence.method import CorrespondenceResult as CorrespondenceResult
    from introspect_correspondence.method import correspondence as correspondence
    from introspect_correspondence.method import default_layers as default_layers
    from introspect_correspondence.parts import boxes_per_image as boxes_per_image
    from introspect_correspondence.parts import load_parts as load_parts


@hookimpl
def register_methods(register):
    register("correspondence", "introspect_correspondence.method:correspondence",
             description="Correspondence of object parts across images (the paper's Sec. 4.3, Table 1)")


@hookimpl
def register_commands(cli):
    from introspect_correspondence.command import correspondence_command

    cli.add_command(correspondence_command)


# torch is imported on first use of these names
lazy_exports(__name__, {
    **dict.fromkeys(["delta", "hamming_matrix", "normalized_hamming", "pair_stats", "sign_pattern"],
                    "introspect_correspondence.measure"),
    **dict.fromkeys(["CorrespondenceResult", "correspondence", "default_layers"], "introspect_correspondence.method"),
    **dict.fromkeys(["boxes_per_image", "load_parts"], "introspect_correspondence.parts"),
})

__all__ = [
    "correspondence", "CorrespondenceResult", "default_layers", "load_parts", "boxes_per_image",
    "sign_pattern", "hamming_matrix", "normalized_hamming", "pair_stats", "delta",
]
