"""What the loop carries from round to round, and what it measures on a model."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..graph import ChannelGraph, LayerCalls, trace
from ..graph.layers import out_widths
from ..measure import count_macs, count_params
from ._data import RunData, top1_accuracy
from .plan import RunPlan
from .progress import Progress, save_progress
from .recalibration import Recalibration
from .result import RoundRecord

log = logging.getLogger("secateurs.prune")


def channels(model: nn.Module) -> dict[str, int]:
    """Output channels (features) per conv and linear layer, for the record."""
    return out_widths(model)


def snapshot(
    model: nn.Module,
    plan: RunPlan,
    shape: tuple[int, ...],
    test_set: Any,
    top1: float | None = None,
    macs: int | None = None,
) -> dict[str, Any]:
    """Params, MACs, the method's own figures (``Method.measures``) and test top-1 (``top1``
    when it is already known, ``macs`` likewise: ``count_macs(model, shape)``); latency is
    measured apart, at the end."""
    if top1 is None:
        top1 = top1_accuracy(model, test_set, plan.device)
    if macs is None:
        macs = count_macs(model, shape)
    out: dict[str, Any] = {"params": count_params(model), "macs": macs, "top1": top1}
    out.update({name: measure(model, shape) for name, measure in plan.method.measures})
    return out


@dataclass
class RunState:
    """The run in progress: the plan and data it reads, the model being pruned, the unpruned
    reference (for modes that read it), and what is saved after every stage."""

    plan: RunPlan
    data: RunData
    pruned: nn.Module
    reference: nn.Module | None
    progress: Progress
    run_dir: Path | None
    example: torch.Tensor  # a (1, C, H, W) input on the run's device
    calibration: Any  # calibration batches for data-driven criteria (None without a training set)
    recalibration: Recalibration
    #: A trace of ``pruned`` as it is now, made before the first round: that round scores on it.
    graph: ChannelGraph | None = None
    #: ``pruned``'s dense MACs when known without a forward (from the last cut's shape check).
    macs: int | None = None

    def take_graph(self) -> ChannelGraph:
        """A trace of ``pruned`` as it is now: the one made at the start, once, else a new one."""
        graph, self.graph = self.graph, None
        return graph if graph is not None else trace(self.pruned, self.example)

    def measure_cut(self, calls: LayerCalls | None) -> float:
        """The figure the target is on, of ``pruned`` right after a cut whose shape check saw
        ``calls``: dense MACs come from those shapes, anything else is measured."""
        self.macs = calls.macs(self.pruned) if calls is not None and calls.usable else None
        if self.macs is not None and self.plan.target_on == "macs":
            return float(self.macs)
        return self.plan.measure(self.pruned, self.data.shape)

    @property
    def floors(self) -> dict[tuple[str, str], int]:
        return {(m, k): n for m, k, n in self.progress.floors}

    @property
    def base(self) -> float:
        """The unpruned model's value of the figure the target is on (``plan.target_on``: dense
        MACs or params, or a method's own such as hnsi's kernel-sparse MACs): what every
        reduction is of, the same figure :meth:`measure_cut` returns."""
        return float(self.progress.before[self.plan.target_on])

    def resumed_cut(self, round: int) -> RoundRecord | None:
        """``round``'s record when the run stopped between its cut and the end of its fine-tuning."""
        record = self.progress.resumed_cut(round)
        if record is not None:
            log.info(
                "round %d/%d: cut before the interruption (%d channels), fine-tuning it now",
                *(round, len(self.plan.rounds), record.channels_removed),
            )
        return record

    def top1(self) -> float | None:
        return top1_accuracy(self.pruned, self.data.test_set, self.plan.device)

    def judge(self, model: nn.Module, round: int) -> float:
        """``model``'s top-1 on the samples set aside, after the round's BN recalibration of it
        (the same batches the run's own recalibration of this round draws)."""
        self.recalibration.run(model, round, lambda: None)
        return top1_accuracy(model, self.data.holdout, self.plan.device)

    def channels(self) -> dict[str, int]:
        return channels(self.pruned)

    def checkpoint(self, round: int, stage: str) -> None:
        """Save the model and the progress after ``round``'s ``stage`` (rank 0, with a run_dir)."""
        self.progress.round, self.progress.stage = round, stage
        if self.run_dir is not None and self.plan.dist.is_main:
            save_progress(self.run_dir, self.pruned, self.progress, self.plan)

    def sync_from_main(self) -> None:
        """Every rank takes rank 0's weights and buffers, so the next round scores the same model
        everywhere (BN running statistics can differ per rank after fine-tuning without sync_bn)."""
        if self.plan.dist.enabled:
            for t in self.pruned.state_dict().values():
                torch.distributed.broadcast(t, 0)
