"""Feature generalization: per-layer linear probes on a new data set (the paper's Tables 4-7).

Registers the method ``introspect.feature_generalization(model, dataset, *, ...)`` (see
:func:`introspect_generalization.method.feature_generalization`) and the command
``introspect generalization [MODEL] DATA``. The modules: :mod:`~introspect_generalization.sampling`
(labels and per-class training samples), :mod:`~introspect_generalization.features` (the frozen
model's features of each layer), :mod:`~introspect_generalization.probes` (softmax and linear SVM
trained with L-BFGS), :mod:`~introspect_generalization.method` (the analysis and its result),
:mod:`~introspect_generalization.figure` (the table and the plot) and
:mod:`~introspect_generalization.command` (the CLI).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from introspect.plugin import hookimpl, lazy_exports

if TYPE_CHECKING:
    from introspect_generalization.method import GeneralizationResult as GeneralizationResult
    from introspect_generalization.method import feature_generalization as feature_generalization


@hookimpl
def register_methods(register):
    register("feature_generalization", "introspect_generalization.method:feature_generalization",
             "Feature generalization (Table 7): softmax / linear SVM on the fixed features of each layer")


@hookimpl
def register_commands(cli):
    from introspect_generalization.command import generalization_command

    cli.add_command(generalization_command)


# torch is imported on first use of these names
lazy_exports(__name__, dict.fromkeys(["feature_generalization", "GeneralizationResult"],
                                     "introspect_generalization.method"))

__all__ = ["feature_generalization", "GeneralizationResult", "register_methods", "register_commands"]
