"""BatchNorm recalibration: re-estimate every BN's running mean and variance on a few batches.

After a cut, the running statistics a BN layer kept describe the input it had before the
cut: removing channels upstream changes the sums its input channels are made of, and in
eval mode the layer then normalises with the wrong mean and variance, which is why top-1
right after a cut is often at chance. Forward passes alone fix that, with no gradient and
no weight change: the cheapest recovery step there is.

The statistics written are exact over all the batches given (and, under ``torchrun``, over
the union of every rank's batches): each BN's input is accumulated per channel in float64
(count, mean and centred sum of squares, merged batch by batch with Chan's formula) and
reduced over the ranks, so every rank ends with the same buffers, equal to those of one
process given all the batches. ``momentum=None``'s cumulative average would not be: the
mean of per-batch variances misses the spread of the batch means.

During the passes the BN layers are in train mode (each normalises with its batch's own
statistics, as they do while training, and as torchvision's and timm's recalibration do),
everything else is in eval mode (no dropout), and the buffers are not touched until every
pass has run, so a failure leaves the model as it was.

    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    >>> result = recalibrate_bn(net, [torch.randn(8, 1, 6, 6) for _ in range(3)])
    >>> result.layers, result.batches, result.samples
    (1, 3, 24)
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from .._progress import tracked
from ..errors import ConfigError
from .distributed import GlobalBatchNorm2d, all_reduce_sum, dist_info


class _LocalBatchNorm(_BatchNorm):
    """SyncBatchNorm's arithmetic without its communication: any input rank, local statistics."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an input with a channel dimension, got shape {tuple(input.shape)}")


#: BN classes that communicate in train mode -> the local class used during the passes. A
#: rank's batches are its own (their statistics are reduced once at the end), and the ranks
#: may hold different numbers of batches, which a collective per forward would deadlock on.
LOCAL_EQUIVALENT: dict[type, type] = {nn.SyncBatchNorm: _LocalBatchNorm, GlobalBatchNorm2d: nn.BatchNorm2d}


@dataclass(frozen=True)
class RecalibrationResult:
    layers: int  # BN layers whose statistics were re-estimated
    batches: int  # over all ranks
    samples: int  # over all ranks
    seconds: float


class _Moments:
    """Per-channel count, mean and centred sum of squares of a BN's input, in float64."""

    def __init__(self, channels: int, device: torch.device) -> None:
        self.n = torch.zeros((), dtype=torch.float64, device=device)
        self.mean = torch.zeros(channels, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(channels, dtype=torch.float64, device=device)

    def add(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0].detach()
        n_b = x.numel() / x.shape[1]
        # One fused pass in the input's precision, as BN's own kernel does (float32 at least);
        # the merging across batches and ranks, where the cancellation would be, is float64.
        var_b, mean_b = torch.var_mean(
            x.float() if x.dtype in (torch.float16, torch.bfloat16) else x, [0, *range(2, x.dim())], correction=0
        )
        mean_b, m2_b = mean_b.double(), var_b.double() * n_b
        delta, total = mean_b - self.mean, self.n + n_b
        self.mean += delta * (n_b / total)
        self.m2 += m2_b + delta.square() * (self.n * n_b / total)
        self.n = total


def _batchnorms(model: nn.Module) -> list[_BatchNorm]:
    return [
        m
        for m in model.modules()
        if isinstance(m, _BatchNorm)
        and m.track_running_stats
        and m.running_mean is not None
        and m.running_var is not None
    ]


def _inputs(batch: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """A batch is the input tensor, or a sequence whose first item is (``(x, y)`` from a loader)."""
    return batch if isinstance(batch, torch.Tensor) else batch[0]


@torch.no_grad()
def _passes(
    model: nn.Module, bns: list[_BatchNorm], batches: Iterable, limit: int | None, progress: bool
) -> tuple[list[_Moments], int, int]:
    """Run the forward passes with the BNs in train mode on batch statistics, the rest in eval
    mode; every module's mode, class and ``track_running_stats`` are restored afterwards."""
    device = bns[0].running_mean.device
    moments = [_Moments(m.num_features, device) for m in bns]
    modes = {m: m.training for m in model.modules()}
    saved = [(m, type(m), m.track_running_stats) for m in bns]
    hooks = [m.register_forward_pre_hook(acc.add) for m, acc in zip(bns, moments)]
    count = samples = 0
    try:
        model.eval()
        for m in bns:
            m.__class__ = LOCAL_EQUIVALENT.get(type(m), type(m))
            m.track_running_stats = False  # train mode on batch statistics, the buffers left alone
            m.train()
        for batch in tracked(islice(batches, limit), "BN recalibration", total=limit, enabled=progress):
            x = _inputs(batch)
            model(x)
            count, samples = count + 1, samples + x.shape[0]
    finally:
        for h in hooks:
            h.remove()
        for m, cls, track in saved:
            m.__class__, m.track_running_stats = cls, track
        for m, training in modes.items():
            m.training = training
    return moments, count, samples


def _reduce(
    moments: list[_Moments], count: int, samples: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
    """Counts, means and centred sums of squares over every rank (each rank's own when one).

    Two all-reduces: the sums give the global mean; each rank's centred sum of squares is then
    shifted to that mean (``m2 + n (mean_r - mean)^2``) and summed, as exact as one process."""
    device = moments[0].mean.device
    sizes = torch.tensor([m.mean.numel() for m in moments], device=device)
    head = torch.tensor([count, samples], dtype=torch.float64, device=device)
    n = torch.stack([m.n for m in moments])
    total = all_reduce_sum(torch.cat([head, n, torch.cat([m.mean * m.n for m in moments])]))
    n_all = torch.repeat_interleave(total[2 : 2 + len(moments)], sizes)
    mean = total[2 + len(moments) :] / n_all.clamp(min=1)
    shift = torch.repeat_interleave(n, sizes) * (torch.cat([m.mean for m in moments]) - mean).square()
    m2 = all_reduce_sum(torch.cat([m.m2 for m in moments]) + shift)
    return n_all, mean, m2, int(total[0]), int(total[1])


def recalibrate_bn(
    model: nn.Module,
    batches: Iterable[torch.Tensor | Sequence[torch.Tensor]],
    *,
    max_batches: int | None = None,
    progress: bool = False,
) -> RecalibrationResult:
    """Re-estimate the running mean and (unbiased) variance of every BatchNorm in ``model``, in place.

    Args:
        model: any network; BN1d/2d/3d, SyncBatchNorm and :class:`GlobalBatchNorm2d` layers that
            track running statistics are recalibrated, nothing else changes (weights, other
            buffers, modes, classes).
        batches: inputs on the model's device, or ``(x, y, ...)`` tuples; under ``torchrun``,
            this rank's share (the statistics cover the union of all ranks' batches).
        max_batches: stop after this many of this rank's batches (default: all).
        progress: show a progress line while passing.

    ``num_batches_tracked`` becomes the number of batches over all ranks. A BN that no batch
    reached (a branch not taken) keeps its statistics.

    Raises:
        ConfigError: ``max_batches`` is negative, or no rank had a batch.
    """
    if max_batches is not None and max_batches < 0:
        raise ConfigError(f"max_batches must be >= 0, got {max_batches!r}")
    started = time.perf_counter()
    bns = _batchnorms(model)
    if not bns:
        return RecalibrationResult(0, 0, 0, time.perf_counter() - started)
    moments, count, samples = _passes(model, bns, batches, max_batches, progress and dist_info().is_main)
    n, mean, m2, count, samples = _reduce(moments, count, samples)
    if count == 0:
        raise ConfigError("recalibrate_bn received no batches: give at least one batch of training inputs")
    start = 0
    with torch.no_grad():
        for m in bns:
            end = start + m.num_features
            seen = n[start:end] > 1  # fewer than two values per channel: no variance, keep the old one
            m.running_mean.copy_(torch.where(seen, mean[start:end], m.running_mean.double()))
            m.running_var.copy_(
                torch.where(seen, m2[start:end] / (n[start:end] - 1).clamp(min=1), m.running_var.double())
            )
            if m.num_batches_tracked is not None and bool(seen.any()):
                m.num_batches_tracked.fill_(count)
            start = end
    return RecalibrationResult(len(bns), count, samples, time.perf_counter() - started)
