"""The microscope: ``introspect report``, a static site of every layer, feature map and image.

Registers the method ``introspect.report(model, dataset, *, out=..., ...)`` (see
:func:`introspect_report.method.report`) and the command ``introspect report [MODEL] [DATA_DIR]``.
The work is done by the other plugins' public methods (``introspect.top_k``, ``introspect.project``,
``introspect.occlusion``, ``introspect.first_layer_filters``), reached through ``introspect.methods()``.
The modules: :mod:`~introspect_report.data` (images and layers), :mod:`~introspect_report.compute`
(the units of work), :mod:`~introspect_report.site` (the pages), :mod:`~introspect_report.store`
(the site folder: staging, swap, lock, reuse) and :mod:`~introspect_report.command` (the CLI).
"""
from __future__ import annotations

from introspect.plugin import hookimpl


@hookimpl
def register_methods(register):
    register("report", "introspect_report.method:report",
             "A browsable static site of every layer, feature map and image (Figs. 2, 6, 7)")


@hookimpl
def register_commands(cli):
    from introspect_report.command import report_command

    cli.add_command(report_command)


def __getattr__(name: str):
    if name in ("report", "Report"):
        from introspect_report import method

        return getattr(method, name)
    raise AttributeError(f"module 'introspect_report' has no attribute {name!r}")


__all__ = ["Report", "register_commands", "register_methods", "report"]
