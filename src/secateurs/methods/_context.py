"""What a method's scoring and its round receive, and what a round returns."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..graph import ChannelGraph, LayerCalls


@dataclass
class ScoreContext:
    """What a scoring function may use."""

    model: nn.Module
    graph: ChannelGraph
    options: Any  # the method's own options dataclass instance
    #: Calibration batches of inputs (already on the model's device), for data-driven criteria.
    calibration: Callable[[], Iterator[torch.Tensor]] | None = None
    seed: int = 0
    #: The network before any round of this run cut or fine-tuned it, kept (read only) when the
    #: method's ``reads_unpruned(options)`` says it scores against it; None otherwise.
    unpruned: nn.Module | None = None


@dataclass
class RoundContext(ScoreContext):
    """What a method's round gets: the pipeline's budget as well."""

    example: torch.Tensor | None = None  # a (1, C, H, W) input on the model's device
    goal: float | None = None  # the cumulative reduction to reach, relative to ``reference``; None: threshold mode
    metric: str = "macs"
    scope: str = "global"
    #: Fewest channels per producer role; None: one each (:func:`secateurs.select.solve`'s
    #: default). An empty dict would set no floor, so a layer could be cut to zero width.
    floors: dict | None = None
    round_to: int = 1  # every layer a round narrows keeps a width that is a multiple of it
    reference: float = 0.0  # the unpruned model's MACs or params
    #: The run's whole target: the last round's ``goal`` (None: threshold mode).
    final_goal: float | None = None
    #: The share of ``final_goal`` this round reaches (the plan's, exact: ``goal / final_goal``
    #: in floating point can round a channel count the other way); None: not given (threshold
    #: mode, or a caller outside the pipeline).
    share: float | None = None
    round: int = 1  # this round's number, from 1
    rounds: int = 1  # the run's number of rounds
    #: ``model`` -> the reduction's figure (MACs or params) of ``model``, as the run measures it.
    measure: Callable[[nn.Module], float] | None = None
    #: ``(model, round)`` -> top-1 on the training samples the run set aside (``Method.holdout``)
    #: after the run's BN recalibration of ``model`` in place; None when none were set aside.
    judge: Callable[[nn.Module, int], float] | None = None


@dataclass
class RoundOutcome:
    """What a method's round did to the model; the pipeline adds what it measures after it."""

    removed: int  # channels (units) removed
    note: str | None = None  # why the goal was not reached, if it was not
    details: dict[str, Any] = field(default_factory=dict)  # method-specific counts for the report
    scored_at: float | None = None  # perf_counter() when selection ended and surgery began
    #: The cut model's layer calls from the surgery's shape check (``graph.cut``): its MACs
    #: without a forward. None: the pipeline measures the model.
    calls: LayerCalls | None = None

    def timing(self, started: float, ended: float) -> tuple[float, float]:
        """(selection seconds, surgery seconds) of a round that ran from ``started`` to ``ended``;
        a round that does not say when its surgery began counts all of it as selection."""
        split = self.scored_at if self.scored_at is not None else ended
        return split - started, ended - split
