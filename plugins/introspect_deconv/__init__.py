"""introspect_deconv: deconvnet projections and top-k mining (Zeiler & Fergus 2014, Sec. 2.1, Fig. 2).

Python API (also ``introspect.project`` and ``introspect.top_k``, registered through the
``register_methods`` hook)::

    result = project(model, images, layer="conv5")      # Projection: the 9 strongest maps per image
    result = project(model, images, layer="conv5", channels=[17], mode="map")
    top = top_k(model, dataset, layer="conv5", k=9)     # TopK: per map, 9 images, projected

Commands: ``introspect deconv [MODEL] [IMAGE]...`` and ``introspect top MODEL DATA_DIR``. The modules:
:mod:`~introspect_deconv.projection` (``project`` and its result), :mod:`~introspect_deconv.top`
(``top_k``: the streaming pass and the projection of the winners), :mod:`~introspect_deconv.distributed`
(the exact merge of several processes' top-k), :mod:`~introspect_deconv.figure` (the pictures) and
:mod:`~introspect_deconv.command` (the CLI).

How the deconvnet treats each kind of layer on the way down (the ``deconvnet`` rule of
:mod:`introspect.core.rules`):

==========================  ===============================================================
layer                       way down
==========================  ===============================================================
ReLU (any form)             ``relu`` of the reconstruction (the paper's rectification)
max pool                    unpooling to the recorded switches; overlapping pools sum
convolution                 the transposed filters (``conv_transpose2d``)
BatchNorm (eval)            its transpose: a per-channel scale (it is a 1x1 filter)
local response norm         passed through unchanged (no counterpart in the paper's Fig. 1)
dropout (eval), identity    unchanged
anything else (sums, ...)   its gradient
==========================  ===============================================================
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from introspect.plugin import hookimpl, lazy_exports

if TYPE_CHECKING:
    from introspect_deconv.projection import Projection as Projection
    from introspect_deconv.projection import project as project
    from introspect_deconv.top import RunningTopK as RunningTopK
    from introspect_deconv.top import TopK as TopK
    from introspect_deconv.top import top_k as top_k


@hookimpl
def register_methods(register):
    register("project", "introspect_deconv.projection:project",
             "Deconvnet projections of feature maps to pixel space (Sec. 2.1)")
    register("top_k", "introspect_deconv.top:top_k",
             "Top-k activations of each feature map over a data set, projected (Fig. 2)")


@hookimpl
def register_commands(cli):
    from introspect_deconv.command import deconv_command, top_command

    cli.add_command(deconv_command)
    cli.add_command(top_command)


# torch is imported on first use of these names
lazy_exports(__name__, {**dict.fromkeys(["Projection", "project"], "introspect_deconv.projection"),
                        **dict.fromkeys(["RunningTopK", "TopK", "top_k"], "introspect_deconv.top")})

__all__ = ["project", "top_k", "Projection", "TopK", "RunningTopK", "register_methods", "register_commands"]
