"""Latency of two models compared in one interleaved pass, with a verdict on its reliability.

Two models timed minutes apart are timed on two different machines as far as the clock is
concerned: another process starts, the CPU clocks down, the cache holds something else.
:func:`compare_latency` therefore alternates the two calls (A B B A A B ...: the order of a
pair flips each time, so neither model always runs on a cache the other warmed), at a fixed
thread count, until the 95% confidence interval of both medians is within ``rel_ci`` of the
median or the time budget runs out. The ratio is the median of the per-pair ratios, so a
slow spell that hits both calls of a pair cancels; its interval comes with it.

The verdict (:attr:`LatencyComparison.reliable`) is False, with the reasons in words, when
the medians did not settle within the budget, when a model's spread is wide, or when other
processes took the cores we left free (:mod:`secateurs.measure.load`). Summaries then say
that the speed-up is unreliable instead of printing it bare.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn as nn

from .._copy import copy_model
from ..errors import ConfigError
from ._common import eval_mode, forward_errors_as_config, indexed_device, model_device_dtype, sample_shape
from .latency import call_ms
from .load import LoadMonitor, LoadWindow

#: The interquartile range over the median above which a model's timings count as too
#: spread to trust a ratio of medians (a quiet machine gives a few percent).
WIDE_SPREAD = 0.25
#: Pairs timed at least, whatever the budget: fewer give no median worth the name.
FEWEST_PAIRS = 5


def default_threads() -> int:
    """Half the cores, at least one: the other half absorbs the OS and stray processes, so
    the figure repeats; stated in every report, since latency depends on it."""
    return max(1, (os.cpu_count() or 1) // 2)


@dataclass
class Timing:
    """One model's timings at one batch size, in milliseconds."""

    median_ms: float
    p10_ms: float
    p25_ms: float
    p75_ms: float
    p90_ms: float
    ci_rel: float  # half-width of the median's 95% confidence interval, over the median
    samples: int

    @property
    def spread(self) -> float:
        """Interquartile range over the median."""
        return (self.p75_ms - self.p25_ms) / self.median_ms if self.median_ms > 0 else math.inf


@dataclass
class BatchComparison:
    batch: int
    a: Timing
    b: Timing
    ratio: float  # median over pairs of time(A) / time(B): above 1, B is faster
    ratio_ci: tuple[float, float]
    stable: bool  # both medians settled within rel_ci before the budget ran out


@dataclass
class LatencyComparison:
    """Result of :func:`compare_latency`; ``to_dict()`` is what reports store."""

    device: str
    dtype: str
    threads: int
    rel_ci: float
    budget_s: float
    elapsed_s: float
    batches: dict[int, BatchComparison]
    load: LoadWindow
    labels: tuple[str, str] = ("A", "B")
    reasons: list[str] = field(default_factory=list)

    @property
    def reliable(self) -> bool:
        return not self.reasons

    def to_dict(self) -> dict:
        d = asdict(self)
        d["batches"] = {str(b): {**asdict(c), "ratio_ci": list(c.ratio_ci)} for b, c in self.batches.items()}
        d["load"], d["labels"] = self.load.to_dict(), list(self.labels)
        d["reliable"] = self.reliable
        return d

    def summary(self) -> str:
        """Lines for a person: median (p10-p90) of both, the speed-up and its verdict."""
        (a, b), lines = self.labels, []
        for n, c in self.batches.items():
            lines.append(
                f"batch {n}: {a} {c.a.median_ms:.3f} ms (p10-p90 {c.a.p10_ms:.3f}-{c.a.p90_ms:.3f}), "
                f"{b} {c.b.median_ms:.3f} ms (p10-p90 {c.b.p10_ms:.3f}-{c.b.p90_ms:.3f}); "
                + speedup_text(c.ratio, c.ratio_ci, self.reliable)
            )
        lines.append(
            f"timed interleaved on {self.device}, {self.threads} thread(s), {self.dtype}, "
            f"{self.elapsed_s:.0f} s; " + ("reliable" if self.reliable else "UNRELIABLE: " + "; ".join(self.reasons))
        )
        return "\n".join(lines)


def speedup_text(ratio: float, ci: tuple[float, float], reliable: bool) -> str:
    text = f"speed-up {ratio:.2f}x (95% CI {ci[0]:.2f}-{ci[1]:.2f})"
    return text if reliable else text + " -- unreliable, see below"


def _median_ci(values: np.ndarray) -> tuple[float, float]:
    """Distribution-free 95% interval of the median: order statistics n/2 -+ 0.98 sqrt(n)."""
    v = np.sort(values)
    n = len(v)
    half = 0.98 * math.sqrt(n)
    lo, hi = max(0, int(math.floor(n / 2 - half))), min(n - 1, int(math.ceil(n / 2 + half)))
    return float(v[lo]), float(v[hi])


def _timing(values: np.ndarray) -> Timing:
    p10, p25, median, p75, p90 = np.percentile(values, [10, 25, 50, 75, 90])
    lo, hi = _median_ci(values)
    ci_rel = (hi - lo) / (2 * median) if median > 0 else math.inf
    return Timing(float(median), float(p10), float(p25), float(p75), float(p90), float(ci_rel), len(values))


def _pairs(
    a: nn.Module,
    b: nn.Module,
    x: torch.Tensor,
    warmup: int,
    min_pairs: int,
    max_pairs: int,
    rel_ci: float,
    deadline: float,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Timings of A and B, pair by pair, until both medians settle or ``deadline`` passes.

    The budget wins over the counts: warm-up stops after one pair once a fifth of the time
    left is spent, and timing after :data:`FEWEST_PAIRS` pairs once the deadline passed (a
    slow model at a large batch gets fewer pairs, and the verdict says so)."""
    warm_until = time.monotonic() + (deadline - time.monotonic()) / 5
    for _ in range(warmup):
        call_ms(a, x)
        call_ms(b, x)
        if time.monotonic() > warm_until:
            break
    ta: list[float] = []
    tb: list[float] = []
    while len(ta) < max_pairs:
        if len(ta) % 2:  # B first in every other pair
            t_b, t_a = call_ms(b, x), call_ms(a, x)
        else:
            t_a, t_b = call_ms(a, x), call_ms(b, x)
        ta.append(t_a)
        tb.append(t_b)
        n = len(ta)
        if n >= min_pairs and n % 5 == 0:
            va, vb = np.array(ta), np.array(tb)
            if max(_timing(va).ci_rel, _timing(vb).ci_rel) <= rel_ci:
                return va, vb, True
        if time.monotonic() > deadline and n >= FEWEST_PAIRS:
            break
    return np.array(ta), np.array(tb), False


def _check(
    batch_sizes: Sequence[int], threads: int | None, rel_ci: float, budget_s: float, min_pairs: int, max_pairs: int
) -> tuple[tuple[int, ...], int]:
    sizes = tuple(int(n) for n in batch_sizes)
    if not sizes or any(n <= 0 for n in sizes):
        raise ConfigError(f"batch_sizes {tuple(batch_sizes)} must be non-empty positive ints, e.g. (1, 64)")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads={threads} must be >= 1, or None for half the cores ({default_threads()})")
    if not 0 < rel_ci < 1 or not budget_s > 0:
        raise ConfigError(f"rel_ci={rel_ci} must be in (0, 1) and budget_s={budget_s} positive, e.g. 0.03 and 20")
    if not FEWEST_PAIRS <= min_pairs <= max_pairs:
        raise ConfigError(f"need {FEWEST_PAIRS} <= min_pairs ({min_pairs}) <= max_pairs ({max_pairs})")
    return sizes, threads if threads is not None else default_threads()


def _runner(model: nn.Module, target: torch.device) -> nn.Module:
    """The model itself when it is on ``target``, else a copy there: the caller's never moves."""
    return model if model_device_dtype(model)[0] == target else copy_model(model).to(target)


def compare_latency(
    model_a: nn.Module,
    model_b: nn.Module,
    input_shape: Sequence[int],
    batch_sizes: Sequence[int] = (1, 64),
    threads: int | None = None,
    device: str | torch.device | None = None,
    budget_s: float = 20.0,
    rel_ci: float = 0.03,
    warmup: int = 5,
    min_pairs: int = 15,
    max_pairs: int = 2000,
    labels: tuple[str, str] = ("A", "B"),
    progress: bool = True,
) -> LatencyComparison:
    """Time ``model_a`` and ``model_b`` interleaved and judge whether their ratio can be trusted.

    Args:
        model_a, model_b: e.g. the unpruned and the pruned network; modes, devices and
            torch's thread count are restored.
        input_shape: one sample, e.g. ``(3, 32, 32)`` (a leading batch dim of 1 is accepted);
            it must fit both models.
        batch_sizes: timed one after the other, each with its share of the budget.
        threads: CPU threads (``torch.set_num_threads``); default :func:`default_threads`.
        device: where to run; default model A's device.
        budget_s: seconds for the whole comparison (after ``min_pairs`` pairs per batch size).
        rel_ci: stop a batch size once both medians' 95% intervals are within this fraction.
        warmup: untimed pairs first (allocator, kernel selection, caches).
        min_pairs, max_pairs: bounds on the timed pairs per batch size; when the budget runs
            out first, ``min_pairs`` gives way (down to :data:`FEWEST_PAIRS`).
        labels: the two models' names in the summary and the reasons, e.g. ("before", "after").
        progress: report progress on stderr (see :mod:`secateurs._progress`).
    """
    from .._progress import progress as progress_bar

    sizes, threads = _check(batch_sizes, threads, rel_ci, budget_s, min_pairs, max_pairs)
    shape = sample_shape(model_a, input_shape)
    sample_shape(model_b, shape)
    target = indexed_device(device) if device is not None else model_device_dtype(model_a)[0]
    dtype = model_device_dtype(model_a)[1]
    a, b = _runner(model_a, target), _runner(model_b, target)
    old_threads, started = torch.get_num_threads(), time.monotonic()
    batches: dict[int, BatchComparison] = {}
    bar = progress_bar(total=len(sizes), desc=f"timing latency ({budget_s:.0f} s budget)", enabled=progress)
    try:
        torch.set_num_threads(threads)
        with LoadMonitor(threads) as watch, eval_mode(a), eval_mode(b), torch.inference_mode():
            for i, n in enumerate(sizes):
                x = torch.randn((n, *shape), device=target, dtype=dtype)
                deadline = started + budget_s * (i + 1) / len(sizes)
                with forward_errors_as_config(shape):
                    ta, tb, stable = _pairs(a, b, x, warmup, min_pairs, max_pairs, rel_ci, deadline)
                lo, hi = _median_ci(ta / tb)
                batches[n] = BatchComparison(n, _timing(ta), _timing(tb), float(np.median(ta / tb)), (lo, hi), stable)
                bar.update(1)
    finally:
        bar.close()
        torch.set_num_threads(old_threads)
    result = LatencyComparison(
        str(target),
        str(dtype).removeprefix("torch."),
        threads,
        rel_ci,
        budget_s,
        time.monotonic() - started,
        batches,
        watch.window,
        tuple(labels),
    )
    result.reasons = verdict(result)
    return result


def verdict(c: LatencyComparison) -> list[str]:
    """The reasons not to trust ``c``'s ratios, in words; empty when there are none."""
    reasons = []
    unsettled = [n for n, b in c.batches.items() if not b.stable]
    if unsettled:
        worst = max(max(c.batches[n].a.ci_rel, c.batches[n].b.ci_rel) for n in unsettled)
        fewest = min(c.batches[n].a.samples for n in unsettled)
        reasons.append(
            f"the medians of batch {', '.join(map(str, unsettled))} did not settle within "
            f"{100 * c.rel_ci:.0f}% in the {c.budget_s:.0f} s budget (+-{100 * worst:.0f}%, "
            f"{fewest} pairs or more)"
        )
    wide = [
        f"batch {n} {name} {100 * t.spread:.0f}%"
        for n, bc in c.batches.items()
        for name, t in zip(c.labels, (bc.a, bc.b))
        if t.spread > WIDE_SPREAD
    ]
    if wide:
        reasons.append(f"the spread (IQR/median) is wide: {', '.join(wide)} (above {100 * WIDE_SPREAD:.0f}%)")
    if c.load.busy:
        reasons.append(c.load.reason())
    return reasons
