"""captum's attribution methods through introspect's front door: ``introspect attribute``.

Registers the method ``introspect.attribute(model, images, *, method, ...)`` (see
:func:`introspect_attribute.method.attribute`) and the command
``introspect attribute [MODEL] [IMAGE]... --method NAME``. The modules:
:mod:`~introspect_attribute.table` (the one table of methods and their options),
:mod:`~introspect_attribute.method` (the library function and its result),
:mod:`~introspect_attribute.figure` (heat maps) and :mod:`~introspect_attribute.command` (the CLI).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from introspect.plugin import hookimpl, lazy_exports

if TYPE_CHECKING:
    from introspect_attribute.method import AttributionResult as AttributionResult
    from introspect_attribute.method import attribute as attribute


@hookimpl
def register_methods(register):
    register("attribute", "introspect_attribute.method:attribute",
             "captum attribution methods (saliency, integrated gradients, Grad-CAM, occlusion, ...) with heat maps")


@hookimpl
def register_commands(cli):
    from introspect_attribute.command import attribute_command

    cli.add_command(attribute_command)


# torch is imported on first use of these names
lazy_exports(__name__, dict.fromkeys(["attribute", "AttributionResult"], "introspect_attribute.method"))

__all__ = ["attribute", "AttributionResult", "register_methods", "register_commands"]
