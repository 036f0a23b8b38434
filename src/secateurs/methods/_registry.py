"""The method registry: every pruning method is one entry, looked up by name.

A channel method contributes a *scoring*: for each producer layer role it scores the
output channels (higher = more important), and the default round (:mod:`._round`) turns
them into unit scores, solves the budget and cuts, so a new criterion is one function. A
method that prunes otherwise brings its own round, and what else sets it apart (its
schedule, what it measures, its last step) is a field of its entry, never a flag the
pipeline tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from .._types import build_options
from ..errors import unknown_choice
from ..select import LayerScores, UnitScores
from ._context import RoundContext, RoundOutcome, ScoreContext
from ._round import even_schedule, score_and_cut, solver_note

ScoreFn = Callable[[ScoreContext], "LayerScores | UnitScores"]
RoundFn = Callable[[RoundContext], RoundOutcome]
#: ``(model, one sample's shape)`` -> a figure recorded before and after pruning.
MeasureFn = Callable[[nn.Module, tuple[int, ...]], Any]


@dataclass(frozen=True)
class NoOptions:
    """The method has no options of its own."""


def any_target(metric: str, scope: str) -> None:
    """Every metric and scope suit a channel method."""


def nothing_to_restore(model: nn.Module) -> None:
    """A channel method's checkpoint holds all of its model."""


def no_holdout(options: Any) -> int | float:
    """A method that sets no training samples aside."""
    return 0


def no_score(ctx: ScoreContext) -> LayerScores:
    """The scoring of a method whose round does not score channels itself (``auto``)."""
    raise TypeError(
        "a method that selects with its own round (such as auto) has no channel scores; call its "
        "prune_round, or secateurs.prune, not its score"
    )


def any_model(model: nn.Module, example: torch.Tensor, options: Any) -> None:
    """A method whose options name nothing in the model."""


def nothing_to_finalize(model: nn.Module, example: torch.Tensor) -> dict[str, Any]:
    """A channel method's model is final after its last round: nothing done, nothing recorded."""
    return {}


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    score: ScoreFn
    options: type = NoOptions
    #: The paper's own schedule: pruning rounds (each followed by fine-tuning).
    rounds: int = 1
    needs_data: bool = False
    #: Normalise each layer's scores by their mean before units are compared across layers.
    normalise: bool = True
    #: A method with its own round (select, fold, cut) instead of score -> budget -> cut.
    prune_round: RoundFn | None = None
    #: Fine-tuning mode when the configuration names none.
    default_finetune: str = "tft"
    #: BN statistics are re-estimated on training batches after each cut unless asked not to;
    #: False for a method whose point is to need no data (probability).
    recalibrate_by_default: bool = True
    #: The method can run without a MACs/params target, on this option of its own (e.g.
    #: probability's ``tau``); giving both is refused.
    threshold_option: str | None = None
    #: ``score`` returns :data:`UnitScores` itself instead of layer scores to be combined per unit.
    unit_scores: bool = False
    #: Figures recorded before and after pruning beside params, MACs and top-1, by name (hnsi:
    #: kernel-sparse MACs and kernels per conv).
    measures: tuple[tuple[str, MeasureFn], ...] = ()
    #: The figure (one of ``measures``) the target and the achieved reduction are on; None: the
    #: configuration's metric (MACs or params).
    target_on: str | None = None
    #: ``(metric, scope)`` -> None, or a ConfigError for a target the method cannot aim at.
    check_target: Callable[[str, str], None] = any_target
    #: ``(model, example input, options)`` -> None, or a ConfigError for options that do not fit
    #: the model (hnsi: ``low_layers`` naming no conv of it); called before the run reads any data.
    check_model: Callable[[nn.Module, torch.Tensor, Any], None] = any_model
    #: Puts back on a model loaded to resume a run what its checkpoint does not hold (kernel masks).
    restore: Callable[[nn.Module], None] = nothing_to_restore
    #: Called on the pruned model, in place, after the last round's fine-tuning (hnsi:
    #: materialisation); what it returns (JSON-able; empty: nothing changed) is the result's
    #: ``finalized``.
    finalize: Callable[[nn.Module, torch.Tensor], dict[str, Any]] = nothing_to_finalize
    #: ``(options, total fine-tuning epochs, rounds asked or None)`` -> ``[(share of the target
    #: reached by the end of the round, its fine-tuning epochs)]``, one per round; None: equal
    #: steps and an even split over ``rounds`` (:func:`._round.even_schedule`).
    schedule: Callable[[Any, int, int | None], list[tuple[float, int]]] | None = None
    #: ``options`` -> training samples the run sets aside before anything reads the training set,
    #: for the method's round to judge cuts on (``RoundContext.judge``; ``auto``): a count, or a
    #: fraction of the training set below 1; 0: none.
    holdout: Callable[[Any], int | float] = no_holdout
    #: ``(achieved, target, last round's achieved)`` -> the note of a run more than a point off target.
    off_target_note: Callable[[float, float, float], str] = solver_note
    #: ``options`` -> whether the scoring reads the unpruned network (``ScoreContext.unpruned``):
    #: the run then keeps a copy of it through every round.
    reads_unpruned: Callable[[Any], bool] = lambda options: False

    def make_options(self, values: dict[str, Any] | None = None) -> Any:
        """The options dataclass from ``values``; an unknown key or a bad value names itself."""
        return build_options(self.options, values, f"method {self.name!r}")

    def round(self, ctx: RoundContext) -> RoundOutcome:
        """One round on ``ctx.model``, in place: the method's own, or score -> solve -> cut."""
        return self.prune_round(ctx) if self.prune_round is not None else score_and_cut(self, ctx)

    def round_schedule(self, options: Any, epochs: int, rounds: int | None) -> list[tuple[float, int]]:
        """Per round: the share of the target reached by its end, and its fine-tuning epochs."""
        if self.schedule is not None:
            return self.schedule(options, epochs, rounds)
        return even_schedule(rounds if rounds is not None else self.rounds, epochs)


METHODS: dict[str, Method] = {}


def register_method(
    name: str,
    summary: str,
    options: type = NoOptions,
    rounds: int = 1,
    needs_data: bool = False,
    normalise: bool = True,
    **extra: Any,
) -> Callable[[ScoreFn], ScoreFn]:
    """Register a scoring function under ``name`` (decorator); ``extra``: other :class:`Method` fields."""

    def deco(fn: ScoreFn) -> ScoreFn:
        if name in METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        METHODS[name] = Method(name, summary, fn, options, rounds, needs_data, normalise, **extra)
        return fn

    return deco


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise unknown_choice("method", name, METHODS)
    return METHODS[name]


def list_methods() -> list[str]:
    return sorted(METHODS)
