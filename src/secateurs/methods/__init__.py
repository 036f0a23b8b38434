"""Pruning methods, each registered by name: ``secateurs methods`` lists them.

Importing this package registers the built-in ones.
"""

from . import bn_scale, fcs, feature_l1, fpgm, hnsi, l1_capped, norms, probability  # noqa: F401  (registration)
from ._registry import (
    METHODS,
    LayerScores,
    Method,
    RoundContext,
    RoundOutcome,
    ScoreContext,
    UnitScores,
    get_method,
    list_methods,
    register_method,
)
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
