"""First-layer filters, dead filters and aliasing (the paper's Fig. 6): ``introspect filters``.

Registers the method ``introspect.first_layer_filters(model, dataset=None, *, layer=None, ...)`` (see
:func:`introspect_filters.method.first_layer_filters`) and the command
``introspect filters [MODEL] [--data DIR]``. The modules: :mod:`~introspect_filters.spectrum` (the
filters' power spectrum and the share of energy above a frequency), :mod:`~introspect_filters.method`
(the data pass, dead filters and the result), :mod:`~introspect_filters.figure` (the pictures) and
:mod:`~introspect_filters.command` (the CLI).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from introspect.plugin import hookimpl, lazy_exports

if TYPE_CHECKING:
    from introspect_filters.method import FiltersResult as FiltersResult
    from introspect_filters.method import first_layer_filters as first_layer_filters


@hookimpl
def register_methods(register):
    register("first_layer_filters", "introspect_filters.method:first_layer_filters",
             "First-layer filters (Fig. 6): dead filters, high-frequency and aliasing energy")


@hookimpl
def register_commands(cli):
    from introspect_filters.command import filters_command

    cli.add_command(filters_command)


# torch is imported on first use of these names
lazy_exports(__name__, dict.fromkeys(["first_layer_filters", "FiltersResult"], "introspect_filters.method"))

__all__ = ["first_layer_filters", "FiltersResult", "register_methods", "register_commands"]
