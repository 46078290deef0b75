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

from introspect.plugin import hookimpl


@hookimpl
def register_methods(register):
    register("feature_generalization", "introspect_generalization.method:feature_generalization",
             "Feature generalization (Table 7): softmax / linear SVM on the fixed features of each layer")


@hookimpl
def register_commands(cli):
    from introspect_generalization.command import generalization_command

    cli.add_command(generalization_command)


def __getattr__(name: str):
    if name in ("feature_generalization", "GeneralizationResult"):
        from introspect_generalization import method

        return getattr(method, name)
    raise AttributeError(f"module 'introspect_generalization' has no attribute {name!r}")


__all__ = ["feature_generalization", "GeneralizationResult", "register_methods", "register_commands"]
