"""Feature invariance to translation, scale and rotation (the paper's Fig. 5): ``introspect invariance``.

Registers the method ``introspect.invariance(model, images, *, ...)`` (see
:func:`introspect_invariance.method.invariance`) and the command
``introspect invariance [MODEL] [IMAGE]...``. The modules: :mod:`~introspect_invariance.transforms`
(translation, scaling and rotation of input tensors), :mod:`~introspect_invariance.method` (the sweep
and its result), :mod:`~introspect_invariance.figure` (plots, the Fig. 5 row, the CSV) and
:mod:`~introspect_invariance.command` (the CLI).
"""
from __future__ import annotations

from introspect.plugin import hookimpl


@hookimpl
def register_methods(register):
    register("invariance", "introspect_invariance.method:invariance",
             "Invariance (Fig. 5): feature distances at layers 1 and 7 and p(class) under translation, "
             "scale or rotation")


@hookimpl
def register_commands(cli):
    from introspect_invariance.command import invariance_command

    cli.add_command(invariance_command)


def __getattr__(name: str):
    if name in ("invariance", "InvarianceResult"):
        from introspect_invariance import method

        return getattr(method, name)
    raise AttributeError(f"module 'introspect_invariance' has no attribute {name!r}")


__all__ = ["invariance", "InvarianceResult", "register_methods", "register_commands"]
