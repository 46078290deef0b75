"""Feature invariance to translation, scale and rotation (the paper's Fig. 5): ``introspect invariance``.

Registers the method ``introspect.invariance(model, images, *, ...)`` (see
:func:`introspect_invariance.method.invariance`) and the command
``introspect invariance [MODEL] [IMAGE]...``. The modules: :mod:`~introspect_invariance.transforms`
(translation, scaling and rotation of input tensors), :mod:`~introspect_invariance.method` (the sweep
and its result), :mod:`~introspect_invariance.figure` (plots, the Fig. 5 row, the CSV) and
:mod:`~introspect_invariance.command` (the CLI).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from introspect.plugin import hookimpl, lazy_exports

if TYPE_CHECKING:
    from introspect_invariance.method import InvarianceResult as InvarianceResult
    from introspect_invariance.method import invariance as invariance


@hookimpl
def register_methods(register):
    register("invariance", "introspect_invariance.method:invariance",
             "Invariance (Fig. 5): feature distances at layers 1 and 7 and p(class) under translation, "
             "scale or rotation")


@hookimpl
def register_commands(cli):
    from introspect_invariance.command import invariance_command

    cli.add_command(invariance_command)


# torch is imported on first use of these names
lazy_exports(__name__, dict.fromkeys(["invariance", "InvarianceResult"], "introspect_invariance.method"))

__all__ = ["invariance", "InvarianceResult", "register_methods", "register_commands"]
