"""Selection: which units a round removes, beneath the methods that score them.

* :mod:`.scores`: layer scores -> one score per unit (what the solver ranks);
* :mod:`._cost`: :class:`CostModel`, MACs and params as functions of the channels removed;
* :mod:`._tracker`: the running totals the solver keeps while it removes units;
* :mod:`.budget`: :func:`solve`, the units to remove for a MACs or params target.

Imports run downward: ``graph`` -> ``select`` -> ``methods`` -> ``pipeline``.
"""

from ._cost import CostModel
from .budget import METRICS, SCOPES, Plan, check_round_to, floors_for, removal_steps, solve
from .scores import LayerScores, UnitScores, normalise, unit_scores

__all__ = [
    "METRICS",
    "SCOPES",
    "CostModel",
    "LayerScores",
    "Plan",
    "UnitScores",
    "check_round_to",
    "floors_for",
    "normalise",
    "removal_steps",
    "solve",
    "unit_scores",
]
