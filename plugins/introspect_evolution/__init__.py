"""Feature evolution during training (the paper's Fig. 4): ``introspect evolution``.

Registers the method ``introspect.feature_evolution(checkpoints, dataset, *, ...)`` (see
:func:`introspect_evolution.method.feature_evolution`) and the command
``introspect evolution CHECKPOINT...``. The modules: :mod:`~introspect_evolution.checkpoints` (finding
the checkpoints of a run, their epochs, checking they belong together), :mod:`~introspect_evolution.method`
(the analysis and its result), :mod:`~introspect_evolution.figure` (the grid of projections) and
:mod:`~introspect_evolution.command` (the CLI).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from introspect.plugin import hookimpl, lazy_exports

if TYPE_CHECKING:
    from introspect_evolution.method import EvolutionResult as EvolutionResult
    from introspect_evolution.method import LayerEvolution as LayerEvolution
    from introspect_evolution.method import feature_evolution as feature_evolution


@hookimpl
def register_methods(register):
    register("feature_evolution", "introspect_evolution.method:feature_evolution",
             "Feature evolution during training (Fig. 4): each map's strongest activation per epoch, projected")


@hookimpl
def register_commands(cli):
    from introspect_evolution.command import evolution_command

    cli.add_command(evolution_command)


# torch is imported on first use of these names
lazy_exports(__name__, dict.fromkeys(["feature_evolution", "EvolutionResult", "LayerEvolution"],
                                     "introspect_evolution.method"))

__all__ = ["feature_evolution", "EvolutionResult", "LayerEvolution", "register_methods", "register_commands"]
