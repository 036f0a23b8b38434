"""The method registry: every pruning method is one entry, looked up by name.

A channel method contributes a *scoring*: for each producer layer role it scores the
output channels (higher = more important). The pipeline turns layer scores into unit
scores, solves the budget and does the surgery, so a new criterion is one function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from .._types import build_options
from ..errors import unknown_choice
from ..graph import ChannelGraph

#: ``(module name, kind)`` -> one score per channel of that role; ``kind`` is ``out``
#: (a Conv/Linear's filters) or ``bn`` (a BatchNorm's channels).
LayerScores = dict[tuple[str, str], torch.Tensor]
#: Index of a group in ``graph.groups`` -> one score per unit, for criteria defined on whole
#: units (``fcs`` compares a unit's feature maps with its group-mates').
UnitScores = dict[int, torch.Tensor]


@dataclass
class ScoreContext:
    """What a scoring function may use."""

    model: nn.Module
    graph: ChannelGraph
    options: Any  # the method's own options dataclass instance
    #: Calibration batches of inputs (already on the model's device), for data-driven criteria.
    calibration: Callable[[], Iterator[torch.Tensor]] | None = None
    seed: int = 0


ScoreFn = Callable[[ScoreContext], "LayerScores | UnitScores"]


@dataclass
class RoundContext(ScoreContext):
    """What a method with its own round procedure gets: the pipeline's budget as well."""

    example: torch.Tensor | None = None  # a (1, C, H, W) input on the model's device
    goal: float | None = None  # the cumulative reduction to reach, relative to ``reference``; None: threshold mode
    metric: str = "macs"
    scope: str = "global"
    floors: dict = field(default_factory=dict)  # fewest channels per producer role
    round_to: int = 1  # every layer a round narrows keeps a width that is a multiple of it
    reference: float = 0.0  # the unpruned model's MACs or params
    round: int = 1  # this round's number, from 1
    rounds: int = 1  # the run's number of rounds


@dataclass
class RoundOutcome:
    removed: int  # channels (units) removed
    note: str | None = None  # why the goal was not reached, if it was not
    details: dict[str, Any] = field(default_factory=dict)  # method-specific counts for the report
    scored_at: float | None = None  # perf_counter() when selection ended and surgery began


RoundFn = Callable[[RoundContext], RoundOutcome]


@dataclass(frozen=True)
class NoOptions:
    """The method has no options of its own."""


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
    #: The method masks kernels (``apply_kernel_masks``): the target and the achieved reduction
    #: are on kernel-sparse MACs (a params target is refused), and the rounds' masks stay on
    #: the model, held through fine-tuning.
    kernel_level: bool = False
    #: Puts back on a model loaded to resume a run what its checkpoint does not hold (kernel masks).
    restore: Callable[[nn.Module], None] | None = None
    #: Called on the pruned model, in place, after the last round's fine-tuning (hnsi:
    #: materialisation); what it returns (JSON-able) is the result's ``finalized``.
    finalize: Callable[[nn.Module, torch.Tensor], dict[str, Any]] | None = None
    #: ``(options, total fine-tuning epochs, rounds asked or None)`` -> ``[(share of the target
    #: reached by the end of the round, its fine-tuning epochs)]``, one per round; None: the
    #: even split of ``PruneConfig.epochs_per_round`` and equal steps towards the target.
    schedule: Callable[[Any, int, int | None], list[tuple[float, int]]] | None = None

    def make_options(self, values: dict[str, Any] | None = None) -> Any:
        """The options dataclass from ``values``; an unknown key or a bad value names itself."""
        return build_options(self.options, values, f"method {self.name!r}")


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
