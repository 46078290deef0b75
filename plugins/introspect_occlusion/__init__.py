"""Occlusion sensitivity, the paper's Fig. 7, from one incremental sweep: ``introspect occlusion``.

Registers the method ``introspect.occlusion(model, images, *, ...)`` (see
:func:`introspect_occlusion.method.occlusion`) and the command ``introspect occlusion [MODEL] [IMAGE]``.
The modules: :mod:`~introspect_occlusion.method` (the sweep and its result; incremental inference
is the core's, :mod:`introspect.core.sweep`), :mod:`~introspect_occlusion.figure` (the panels) and
:mod:`~introspect_occlusion.command` (the CLI).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from introspect.plugin import hookimpl, lazy_exports

if TYPE_CHECKING:
    from introspect_occlusion.method import OcclusionResult as OcclusionResult
    from introspect_occlusion.method import occlusion as occlusion


@hookimpl
def register_methods(register):
    register("occlusion", "introspect_occlusion.method:occlusion",
             "Occlusion sensitivity (Fig. 7): probability, label and activation maps from one sweep")


@hookimpl
def register_commands(cli):
    from introspect_occlusion.command import occlusion_command

    cli.add_command(occlusion_command)


# torch is imported on first use of these names
lazy_exports(__name__, dict.fromkeys(["occlusion", "OcclusionResult"], "introspect_occlusion.method"))

__all__ = ["occlusion", "OcclusionResult", "register_methods", "register_commands"]
