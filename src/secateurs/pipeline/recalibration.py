"""BN recalibration in the pruning run: after each cut (and after hnsi's materialisation),
every BatchNorm's running statistics are re-estimated on batches of the training set
(:func:`secateurs.train.recalibrate_bn`), and top-1 is measured before and after.

The batches are a seeded subset of the training set, drawn afresh for each cut from the
run's seed and the round, never from the test set; under ``torchrun`` each rank passes
every ``world_size``-th of them and the statistics are reduced over the ranks, so the
result equals one process's.

The default of :data:`DEFAULT_BN_RECALIBRATION` batches was chosen by measurement
(``benchmarks/results/bn_recalibration.md``, on the 2-core CPU machine, one thread): the
converged resnet20 baseline (``benchmarks/checkpoints/fashion-mnist/resnet20``, 94.53% test
top-1), cut by ``l1`` to 50% MACs with no fine-tuning, then recalibrated on N batches of
128; top-1 on a seeded 2,000-image test subset (unpruned 94.50%, right after the cut
21.70%), mean ± std of seeds 0 and 1::

    N              1             2             5             10            20            50
    top-1 %        76.15±0.14    76.90±0.00    76.90±0.42    76.67±0.60    76.65±0.00    76.65±0.49
    recalibrate s  0.31          0.60          1.53          3.11          5.98          15.65

The gain is flat from 2 batches on (the differences are within the subset's noise); 20 is
kept, ten times past the knee, as a margin for networks with more BatchNorm layers or
noisier batches (a 1-epoch resnet20 measured before the converged one plateaued only from
10 batches; deeper cuts and larger models are not measured), at 6 s per cut on one thread. Recalibrating
the unpruned model on 50 batches left it at 94.40 / 94.35%. Reproduce with::

    OMP_NUM_THREADS=1 python benchmarks/bn_recalibration.py \
        --checkpoint benchmarks/checkpoints/fashion-mnist/resnet20/model.safetensors
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from ..train import recalibrate_bn
from ..train.distributed import DistInfo

if TYPE_CHECKING:
    from .plan import RunPlan

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
    train_set: Any  # an ImageDataset or a torch Dataset (what ``calibration_batches`` reads); None when off
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
        batches = self.source(
            self.train_set, self.batches * BATCH_SIZE, recalibration_seed(self.seed, round), self.device, BATCH_SIZE
        )
        mine = (x for i, x in enumerate(batches()) if i % self.info.world_size == self.info.rank)
        t0 = time.perf_counter()
        result = recalibrate_bn(model, mine, progress=True)  # silent for a short loop and on other ranks
        seconds = time.perf_counter() - t0
        return {
            "top1_after_cut": before,
            "top1_after_recalibration": top1(),
            "recalibration_s": seconds,
            "recalibration_batches": result.batches,
        }


def recalibration_plan(plan: RunPlan, train_set: Any, source: BatchSource) -> Recalibration:
    """The plan's batches per cut, or off (0 batches) when there is no training set to draw from."""
    batches = plan.bn_recalibration if train_set is not None else 0
    return Recalibration(batches, train_set, plan.config.seed, plan.device, plan.dist, source)
