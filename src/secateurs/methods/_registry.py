"""The method registry: every pruning method is one entry, looked up by name.

A channel method contributes a *scoring*: for each producer layer role it scores the
output channels (higher = more important). The pipeline turns layer scores into unit
scores, solves the budget and does the surgery, so a new criterion is one function.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from .._types import check_field_types
from ..errors import ConfigError, unknown_choice
from ..graph import ChannelGraph

#: ``(module name, kind)`` -> one score per channel of that role; ``kind`` is ``out``
#: (a Conv/Linear's filters) or ``bn`` (a BatchNorm's channels).
LayerScores = dict[tuple[str, str], torch.Tensor]


@dataclass
class ScoreContext:
    """What a scoring function may use."""

    model: nn.Module
    graph: ChannelGraph
    options: Any  # the method's own options dataclass instance
    #: Calibration batches of inputs (already on the model's device), for data-driven criteria.
    calibration: Callable[[], Iterator[torch.Tensor]] | None = None
    seed: int = 0


ScoreFn = Callable[[ScoreContext], LayerScores]


@dataclass
class RoundContext(ScoreContext):
    """What a method with its own round procedure gets: the pipeline's budget as well."""

    example: torch.Tensor | None = None  # a (1, C, H, W) input on the model's device
    goal: float | None = None  # the cumulative reduction to reach, relative to ``reference``; None: threshold mode
    metric: str = "macs"
    scope: str = "global"
    floors: dict = field(default_factory=dict)  # fewest channels per producer role
    reference: float = 0.0  # the unpruned model's MACs or params


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
    #: The method can run without a MACs/params target, on this option of its own (e.g.
    #: probability's ``tau``); giving both is refused.
    threshold_option: str | None = None

    def make_options(self, values: dict[str, Any] | None = None) -> Any:
        """The options dataclass from ``values``; an unknown key or a bad value names itself."""
        values = dict(values or {})
        known = {f.name: f for f in dataclasses.fields(self.options)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            valid = ", ".join(sorted(known)) or "none"
            raise ConfigError(f"method {self.name!r} has no option(s) {unknown}; its options are: {valid}")
        try:
            options = self.options(**values)
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:
            raise ConfigError(f"bad option for method {self.name!r}: {e}") from e
        check_field_types(options, f"option of method {self.name!r}")
        return options


METHODS: dict[str, Method] = {}


def register_method(name: str, summary: str, options: type = NoOptions, rounds: int = 1,
                    needs_data: bool = False, normalise: bool = True, **extra: Any) -> Callable[[ScoreFn], ScoreFn]:
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
