"""introspect_deconv: deconvnet projections and top-k mining (Zeiler & Fergus 2014, Sec. 2.1, Fig. 2).

Python API (also ``introspect.project`` and ``introspect.top_k``, registered through the
``register_methods`` hook)::

    result = project(model, images, "conv5")            # Projection: the 9 strongest maps per image
    result = project(model, images, "conv5", channels=[17], mode="map")
    top = top_k(model, dataset, "conv5", k=9)           # TopK: per map, 9 images, projected

Commands: ``introspect deconv [MODEL] [IMAGE]...`` and ``introspect top MODEL DATA_DIR``.

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

from introspect.plugin import hookimpl
from introspect_deconv.project import Projection, project  # eager: the names shadow their modules
from introspect_deconv.top import RunningTopK, TopK, top_k


@hookimpl
def register_methods(register):
    register("project", project, "Deconvnet projections of feature maps to pixel space (Sec. 2.1)")
    register("top_k", top_k, "Top-k activations of each feature map over a data set, projected (Fig. 2)")


@hookimpl
def register_commands(cli):
    from introspect_deconv.command import deconv_command, top_command

    cli.add_command(deconv_command)
    cli.add_command(top_command)


__all__ = ["project", "top_k", "Projection", "TopK", "RunningTopK", "register_methods", "register_commands"]
