"""Learning-rate schedules as pure functions of the step.

A pure function needs no state in the resume file and gives every process the same
rate, which is why these are not ``torch.optim.lr_scheduler`` objects.
"""

from __future__ import annotations

import math
from collections.abc import Callable

# (step, total_steps, warmup_steps) -> multiplier of the base learning rate
Schedule = Callable[[int, int, int], float]


def _warmup(step: int, warmup: int) -> float | None:
    return (step + 1) / warmup if step < warmup else None


def cosine(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to zero (SGDR without restarts)."""
    w = _warmup(step, warmup)
    if w is not None:
        return w
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def onecycle(step: int, total: int, warmup: int) -> float:
    """Smith's one-cycle: up from 1/25 to the peak over 30% (or the warm-up), cosine down to 1/1e4."""
    peak_at = warmup if warmup > 0 else max(1, int(0.3 * total))
    start, end = 1 / 25, 1 / (25 * 1e4)
    if step < peak_at:
        t = step / peak_at
        return start + (1 - start) * 0.5 * (1 - math.cos(math.pi * t))
    t = (step - peak_at) / max(1, total - peak_at)
    return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def constant(step: int, total: int, warmup: int) -> float:
    w = _warmup(step, warmup)
    return 1.0 if w is None else w


SCHEDULES: dict[str, Schedule] = {"cosine": cosine, "onecycle": onecycle, "constant": constant}
