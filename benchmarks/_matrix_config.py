"""A matrix cell's one configuration, and whether a result still matches it.

A result is *outdated* when it ran under another definition of its variant
(``_matrix_spec.stale``) or when the variant's configuration resolves differently today: a
method's default option or schedule changed under an unchanged variant name would otherwise
be averaged with the runs of the new default."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from _matrix_spec import PROFILES, TP, VARIANTS, Cell, Profile, stale

from secateurs import PruneConfig

#: Whether this secateurs has the pipeline's BN recalibration option (issue 12, section 1).
HAS_RECAL_OPTION = "bn_recalibration" in {f.name for f in dataclasses.fields(PruneConfig)}


def cell_config(cell: Cell, profile: Profile) -> PruneConfig:
    """The one configuration of the cell: its target, the profile's budget (the variant's share
    of it), its seed; Torch-Pruning's runs use only the budget and the seed of it."""
    v = VARIANTS[cell.variant]
    b = profile.budget
    # A share rounds down (at least one epoch): fcs-mlft-half gets 2 of 5, "at most E/2" as
    # its claim reads, never more than half (Python's round(2.5) is 2 only by luck of parity).
    epochs = 0 if v.finetune == "none" else max(1, math.floor(b.epochs * v.epochs_share))
    train = {"lr": b.lr, "batch_size": b.batch_size, "progress": False}
    if b.max_steps_per_epoch:
        train["max_steps_per_epoch"] = b.max_steps_per_epoch
    if b.channels_last:
        train["channels_last"] = True
    extra: dict[str, Any] = dict(v.options)
    if v.recalibrate is not None and HAS_RECAL_OPTION:
        extra["bn_recalibration"] = v.recalibrate
    method = "l1" if v.method == TP else v.method  # TP: the config only carries the budget
    return PruneConfig(
        method=method,
        **cell.goal(),
        finetune=v.finetune,
        finetune_epochs=epochs,
        finetune_train=train,
        seed=cell.seed,
        device=profile.device,
        latency=False,
        eval_each_epoch=False,
        evaluate_before=False,
        **extra,
    )


def resolved(cell: Cell, config: PruneConfig) -> dict[str, Any] | None:
    """``config`` (the cell's, :func:`cell_config`) as the pipeline resolves it today: the
    method's and the fine-tuning's options with every default filled in, and each round's share
    of the target and epochs. None for Torch-Pruning's cells (its own code decides)."""
    if VARIANTS[cell.variant].method == TP:
        return None
    plan = config.plan
    now = {**plan.resolved_options(), "rounds": [[r.share, r.epochs] for r in plan.rounds]}
    return json.loads(json.dumps(now))  # as a result file holds it (tuples as lists)


def outdated(record: dict[str, Any]) -> bool:
    """Whether the result ``record`` no longer matches its cell: :func:`stale`, or it recorded a
    resolution that differs from today's (results from before resolutions were recorded cannot
    tell, and count as current)."""
    if stale(record):
        return True
    if record.get("resolved") is None or record["variant"] not in VARIANTS or record["profile"] not in PROFILES:
        return False
    cell = Cell(record["model"], record["variant"], record["target"], record["seed"])
    return record["resolved"] != resolved(cell, cell_config(cell, PROFILES[record["profile"]]))
