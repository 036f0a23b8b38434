"""BN recalibration in the pruning run: after each cut (and after hnsi's materialisation),
every BatchNorm's running statistics are re-estimated on batches of the training set
(:func:`secateurs.train.recalibrate_bn`), and top-1 is measured before and after.

The batches are a seeded subset of the training set, drawn afresh for each cut from the
run's seed and the round, never from the test set; under ``torchrun`` each rank passes
every ``world_size``-th of them and the statistics are reduced over the ranks, so the
result equals one process's.

The default of :data:`DEFAULT_BN_RECALIBRATION` batches was chosen by measurement
(``benchmarks/results/bn_recalibration.md``): resnet20 trained 1 epoch of 150 steps on
Fashion-MNIST (top-1 82.25%), cut by ``l1`` to 50% MACs (top-1 10.00%, chance), then
recalibrated on N batches of 128, seeds 0-2 (test top-1, mean)::

    N      1      2      5      10     20     50
    top-1  see the results file (this line is filled in by the measurement)

    OMP_NUM_THREADS=1 python benchmarks/bn_recalibration.py --checkpoint /tmp/h1-r20/model.safetensors
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
import torch.nn as nn

from ..data import ImageDataset
from ..train import recalibrate_bn
from ..train.distributed import DistInfo

if TYPE_CHECKING:
    from .config import PruneConfig

#: Batches per cut when the configuration names none and there is a training set.
DEFAULT_BN_RECALIBRATION = 20
#: Samples per recalibration batch (BN statistics per batch are those of training batches).
BATCH_SIZE = 128
#: Keeps the recalibration subsets apart from the scoring calibration subset (seeded by ``seed``).
SEED_STRIDE = 1_000_003

#: The pipeline's ``calibration_batches``: ``(train_set, samples, seed, device, batch_size)`` ->
#: a callable giving the batches.
BatchSource = Callable[..., Callable[[], Iterator[torch.Tensor]]]


def recalibration_seed(seed: int, round: int) -> int:
    """The subset's seed for ``round`` (``rounds + 1`` for the step after the last round)."""
    return seed * SEED_STRIDE + round + 1


@dataclass(frozen=True)
class Recalibration:
    """The run's recalibration, resolved once: how many batches (0: off), drawn from where."""

    batches: int
    train_set: ImageDataset | None
    seed: int
    device: torch.device
    info: DistInfo
    source: BatchSource

    def run(self, model: nn.Module, round: int, top1: Callable[[], float | None]) -> dict[str, Any]:
        """Recalibrate ``model`` in place; the figures a round record keeps (``top1`` measures
        the test accuracy, before and after; only before when recalibration is off)."""
        before = top1()
        if not self.batches:
            return {"top1_after_cut": before}
        batches = self.source(self.train_set, self.batches * BATCH_SIZE, recalibration_seed(self.seed, round),
                              self.device, BATCH_SIZE)
        mine = (x for i, x in enumerate(batches()) if i % self.info.world_size == self.info.rank)
        t0 = time.perf_counter()
        result = recalibrate_bn(model, mine)
        seconds = time.perf_counter() - t0
        return {"top1_after_cut": before, "top1_after_recalibration": top1(), "recalibration_s": seconds,
                "recalibration_batches": result.batches}


def recalibration_plan(config: "PruneConfig", train_set: ImageDataset | None, device: torch.device, info: DistInfo,
                       source: BatchSource) -> Recalibration:
    """Off (0 batches) when asked, or by default when there is no training set to draw from."""
    batches = config.resolved_bn_recalibration(train_set is not None) if train_set is not None else 0
    return Recalibration(batches, train_set, config.seed, device, info, source)
