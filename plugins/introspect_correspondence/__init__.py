"""Correspondence analysis (Zeiler & Fergus 2014, Sec. 4.3, Table 1): the bundled plugin.

Python::

    result = introspect.correspondence(model, images, parts={"nose": [9, 8, 15, 13]}, layers=["relu5", "relu7"])
    print(result.table())

Command line::

    introspect correspondence MODEL IMAGE... --parts parts.json [--layer L ...] [--random N]

The measure (:mod:`introspect_correspondence.delta`), the parts format
(:mod:`introspect_correspondence.parts`) and the method (:func:`correspondence`) are documented in
their modules.
"""
from __future__ import annotations

from introspect.plugin import hookimpl
from introspect_correspondence.delta import delta, hamming_matrix, normalized_hamming, pair_stats, sign_pattern
from introspect_correspondence.method import CorrespondenceResult, correspondence, default_layers
from introspect_correspondence.parts import boxes_per_image, load_parts


@hookimpl
def register_methods(register):
    register("correspondence", correspondence,
             description="Correspondence of object parts across images (the paper's Sec. 4.3, Table 1)")


@hookimpl
def register_commands(cli):
    from introspect_correspondence.command import correspondence_command

    cli.add_command(correspondence_command)


__all__ = [
    "correspondence", "CorrespondenceResult", "default_layers", "load_parts", "boxes_per_image",
    "sign_pattern", "hamming_matrix", "normalized_hamming", "pair_stats", "delta",
]
