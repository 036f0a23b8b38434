"""``auto``: cut with every candidate method, keep the one the held-out samples prefer.

Which criterion loses least at a budget depends on the network, its training and the
budget (``benchmarks/results/REPORT.md`` shows it changing between models and targets), so
a user should not have to guess. A one-round cut followed by BN recalibration costs
seconds next to the minutes or hours of fine-tuning, so ``auto`` tries every candidate:

1. each candidate method cuts a copy of the model to the round's goal (its own scores, the
   same budget solver, floors and ``round_to``);
2. the copy's BN statistics are recalibrated on the run's recalibration batches (unless the
   run turns recalibration off: ``bn_recalibration=0``) and it is
   scored by top-1 on ``holdout`` samples of the *training* set that the run sets aside
   before anything reads it: calibration, recalibration and fine-tuning never see them, and
   the test set is never used to choose (a choice made on the test set would make the
   reported test accuracy optimistic);
3. the best candidate's cut is made again on the model itself (the same scores from the
   same calibration batches, so the same cut, and the run's own recalibration gives it the
   same BN statistics; its recorded top-1 is on the test set, its candidate score on the
   held-out samples), and only that model is fine-tuned.

Every candidate's score, reduction and time are recorded in the round's ``details``
(``metrics.json``). ``auto`` runs one round: candidates are compared as one-shot cuts, so a
method that the papers iterate (``l1-capped``) takes part with its criterion in one round.
Methods whose target is on another figure (``hnsi``'s kernel-sparse MACs) cannot be compared
on the same budget and are refused as candidates; ``random`` is a control, not a choice.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import torch

from .._copy import copy_model
from .._types import check_field_types
from ..errors import ConfigError, PruningError
from ..graph import trace
from ._context import RoundContext, RoundOutcome
from ._registry import METHODS, Method, get_method, no_score, register_method

#: Training samples set aside to choose on: 2,000 put the standard error of a top-1 near 90%
#: at about 0.7 point, finer than the gaps between criteria right after a cut at 50% MACs.
DEFAULT_HOLDOUT = 2000
#: Not offered by default: the control (random scores) and auto itself.
NOT_CANDIDATES = frozenset({"auto", "random"})


def default_candidates() -> tuple[str, ...]:
    """Every registered method that can aim at the same MACs or params target, but the control."""
    return tuple(n for n in sorted(METHODS) if n not in NOT_CANDIDATES and METHODS[n].target_on is None)


@dataclass(frozen=True)
class AutoOptions:
    #: The methods to try, comma-separated, in order (``l1,fcs,bn-scale``: the same text on the
    #: command line, in a recipe and in ``config.json``); None: :func:`default_candidates`.
    candidates: str | None = None
    #: Training samples set aside to score the candidates on: a count, or a fraction of the
    #: training set when below 1 (``0.05``: 5%).
    holdout: int | float = DEFAULT_HOLDOUT

    def __post_init__(self) -> None:
        check_field_types(self, "auto option")
        names = self.methods
        for name in names:
            try:
                method = get_method(name)
            except ConfigError as e:  # an unknown name, refused with the known ones
                raise ValueError(f"candidates: {e}") from e
            if name == "auto" or method.target_on is not None:
                why = "auto cannot choose itself" if name == "auto" else f"its target is on {method.target_on}"
                raise ValueError(f"candidate {name!r} cannot be compared with the others: {why}")
        if len(set(names)) != len(names):
            raise ValueError(f"candidates must not repeat a method, got {self.candidates!r}")
        if not (self.holdout > 0 and (isinstance(self.holdout, int) or self.holdout < 1)):
            raise ValueError(
                f"holdout must be a number of training samples (an integer >= 1) or a fraction of them "
                f"in (0, 1), got {self.holdout!r}"
            )

    @property
    def methods(self) -> tuple[str, ...]:
        """The candidates' names, in the order they are tried."""
        names = tuple(n.strip() for n in (self.candidates or "").split(",") if n.strip())
        return names or default_candidates()


def _try(method: Method, ctx: RoundContext) -> dict[str, Any]:
    """One candidate: cut a copy, recalibrate it, score it on the held-out samples."""
    t0 = time.perf_counter()
    trial = copy_model(ctx.model)
    sub = dataclasses.replace(ctx, model=trial, graph=trace(trial, ctx.example), options=method.make_options())
    try:
        outcome = method.round(sub)
    except (ConfigError, PruningError) as e:  # the candidate's own refusal: recorded, not fatal
        return {"method": method.name, "refused": str(e), "seconds": time.perf_counter() - t0}
    return {
        "method": method.name,
        "holdout_top1": ctx.judge(trial, ctx.round),
        "removed": outcome.removed,
        "reduction": 1 - ctx.measure(trial) / ctx.reference,
        "note": outcome.note,
        "seconds": time.perf_counter() - t0,
    }


def auto_round(ctx: RoundContext) -> RoundOutcome:
    """Try every candidate on a copy, then make the best one's cut on ``ctx.model``."""
    if ctx.judge is None or ctx.measure is None:
        raise ConfigError("method 'auto' scores its candidates on held-out training samples: give a train_set")
    o: AutoOptions = ctx.options
    tried = [_try(get_method(name), ctx) for name in o.methods]
    scored = [t for t in tried if "holdout_top1" in t]
    if not scored:
        reasons = "; ".join(f"{t['method']}: {t['refused']}" for t in tried)
        raise ConfigError(f"method 'auto': every candidate refused this model or target ({reasons})")
    best = _agree(max(range(len(scored)), key=lambda i: scored[i]["holdout_top1"]), ctx.example.device)
    chosen = get_method(scored[best]["method"])
    outcome = chosen.round(dataclasses.replace(ctx, options=chosen.make_options()))
    outcome.details = {
        **outcome.details,
        "auto": {"chosen": chosen.name, "holdout_samples": o.holdout, "candidates": tried},
    }
    return outcome


def _agree(index: int, device: torch.device) -> int:
    """Under DDP every rank takes rank 0's choice (held-out top-1 can differ in the last bits)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        t = torch.tensor([index], device=device)
        torch.distributed.broadcast(t, 0)
        return int(t.item())
    return index


register_method(
    "auto",
    "every candidate method cuts a copy; the best on held-out training samples is kept and fine-tuned",
    AutoOptions,
    needs_data=True,
    prune_round=auto_round,
    holdout=lambda o: o.holdout,
)(no_score)
