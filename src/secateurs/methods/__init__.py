"""Pruning methods, each registered by name: ``secateurs methods`` lists them.

Importing this package registers the built-in ones. A method is its entry
(:class:`Method`): a scoring, and a round (its own, or the default score -> solve -> cut of
:mod:`._round`) that the pipeline runs once per round.
"""

from ..select import LayerScores, UnitScores
from . import auto, bn_scale, fcs, feature_l1, fpgm, hnsi, l1_capped, norms, probability  # noqa: F401  (registration)
from ._context import RoundContext, RoundOutcome, ScoreContext
from ._registry import METHODS, Method, get_method, list_methods, register_method
from .l1_capped import L1CappedOptions, l1_capped_scores

__all__ = [
    "L1CappedOptions",
    "LayerScores",
    "METHODS",
    "Method",
    "RoundContext",
    "RoundOutcome",
    "ScoreContext",
    "get_method",
    "l1_capped_scores",
    "list_methods",
    "register_method",
    "UnitScores",
]
