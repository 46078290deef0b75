"""The microscope: ``introspect report``, a static site of every layer, feature map and image.

Registers the method ``introspect.report(model, dataset, *, out=..., ...)`` (see
:func:`introspect_report.method.report`) and the command ``introspect report [MODEL] [DATA_DIR]``.
The work is done by the other plugins' public methods (``introspect.top_k``,
``introspect.occlusion``, ``introspect.first_layer_filters``), reached through ``introspect.methods()``.
The modules: :mod:`~introspect_report.data` (images and layers), :mod:`~introspect_report.compute`
(the units of work), :mod:`~introspect_report.site` (the pages), :mod:`~introspect_report.store`
(the site folder: staging, swap, lock, reuse) and :mod:`~introspect_report.command` (the CLI).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from introspect.plugin import hookimpl, lazy_exports

if TYPE_CHECKING:
    from introspect_report.method import Report as Report
    from introspect_report.method import report as report


@hookimpl
def register_methods(register):
    register("report", "introspect_report.method:report",
             "A browsable static site of every layer, feature map and image (Figs. 2, 6, 7)")


@hookimpl
def register_commands(cli):
    from introspect_report.command import report_command

    cli.add_command(report_command)


# torch is imported on first use of these names
lazy_exports(__name__, dict.fromkeys(["report", "Report"], "introspect_report.method"))

__all__ = ["report", "Report", "register_methods", "register_commands"]
