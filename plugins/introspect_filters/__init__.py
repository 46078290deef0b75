"""First-layer filters, dead filters and aliasing (the paper's Fig. 6): ``introspect filters``.

Registers the method ``introspect.first_layer_filters(model, dataset=None, *, layer=None, ...)`` (see
:func:`introspect_filters.method.first_layer_filters`) and the command
``introspect filters [MODEL] [--data DIR]``. The modules: :mod:`~introspect_filters.spectrum` (the
filters' power spectrum and the share of energy above a frequency), :mod:`~introspect_filters.method`
(the data pass, dead filters and the result), :mod:`~introspect_filters.figure` (the pictures) and
:mod:`~introspect_filters.command` (the CLI).
"""
from __future__ import annotations

from introspect.plugin import hookimpl


@hookimpl
def register_methods(register):
    register("first_layer_filters", "introspect_filters.method:first_layer_filters",
             "First-layer filters (Fig. 6): dead filters, high-frequency and aliasing energy")


@hookimpl
def register_commands(cli):
    from introspect_filters.command import filters_command

    cli.add_command(filters_command)


def __getattr__(name: str):
    if name in ("first_layer_filters", "FiltersResult"):
        from introspect_filters import method

        return getattr(method, name)
    raise AttributeError(f"module 'introspect_filters' has no attribute {name!r}")


__all__ = ["first_layer_filters", "FiltersResult", "register_methods", "register_commands"]
