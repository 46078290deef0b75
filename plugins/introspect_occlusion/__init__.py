"""Occlusion sensitivity, the paper's Fig. 7, from one incremental sweep: ``introspect occlusion``.

Registers the method ``introspect.occlusion(model, images, *, ...)`` (see
:func:`introspect_occlusion.method.occlusion`) and the command ``introspect occlusion [MODEL] [IMAGE]``.
The modules: :mod:`~introspect_occlusion.method` (the sweep and its result),
:mod:`~introspect_occlusion.incremental` (incremental inference on the ``torch.fx`` graph),
:mod:`~introspect_occlusion.figure` (the panels) and :mod:`~introspect_occlusion.command` (the CLI).
"""
from __future__ import annotations

from introspect.plugin import hookimpl


@hookimpl
def register_methods(register):
    register("occlusion", "introspect_occlusion.method:occlusion",
             "Occlusion sensitivity (Fig. 7): probability, label and activation maps from one sweep")


@hookimpl
def register_commands(cli):
    from introspect_occlusion.command import occlusion_command

    cli.add_command(occlusion_command)


def __getattr__(name: str):
    if name in ("occlusion", "OcclusionResult"):
        from introspect_occlusion import method

        return getattr(method, name)
    raise AttributeError(f"module 'introspect_occlusion' has no attribute {name!r}")


__all__ = ["occlusion", "OcclusionResult", "register_methods", "register_commands"]
