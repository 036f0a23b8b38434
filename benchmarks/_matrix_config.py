"""A matrix cell's one configuration, and whether a result still matches it.

A result is *outdated* when it ran under another definition of its variant
(``_matrix_spec.stale``) or when the variant's configuration resolves differently today: a
method's default option or schedule changed under an unchanged variant name would otherwise
be averaged with the runs of the new default."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from _matrix_spec import PROFILES, TP, VARIANTS, Cell, Profile, stale

from secateurs import PruneConfig
from secateurs._atomic import atomic_write

#: Training settings that change speed or display, not what is learnt (up to floating-point
#: order): left out of a resolution, so that a profile's speed option (the 25 first converged
#: cells ran channels-last, the later ones NCHW) does not set results aside.
SPEED_ONLY = ("channels_last", "device", "progress", "eval_batch_size", "num_workers")

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


def write_record(path: Path, record: dict[str, Any]) -> None:
    """A result file as every matrix command writes it: indented JSON, replaced atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(record, indent=1) + "\n"))


def resolved(cell: Cell, config: PruneConfig) -> dict[str, Any] | None:
    """``config`` (the cell's, :func:`cell_config`) as the pipeline resolves it today: the
    method's and the fine-tuning's options with every default filled in, each round's share of
    the target and epochs, the run-level settings that shape the cut (``run``) and each
    fine-tuning round's whole training configuration (``train``). None for Torch-Pruning's
    cells (its own code decides)."""
    if VARIANTS[cell.variant].method == TP:
        return None
    plan = config.plan
    run = {
        "metric": config.metric,
        "target_on": plan.target_on,
        "scope": config.scope,
        "min_keep_fraction": config.min_keep_fraction,
        "round_to": config.round_to,
        "calib_samples": config.calib_samples,
        "bn_recalibration": plan.bn_recalibration,
    }
    now = {
        **plan.resolved_options(),
        "rounds": [[r.share, r.epochs] for r in plan.rounds],
        "run": run,
        "train": [_beyond(dataclasses.asdict(r.train), *SPEED_ONLY) for r in plan.rounds if r.epochs],
    }
    return json.loads(json.dumps(now))  # as a result file holds it (tuples as lists)


def outdated(record: dict[str, Any]) -> bool:
    """Whether the result ``record`` no longer matches its cell: :func:`stale`, or a part of the
    resolution it recorded differs from today's. Only the parts it recorded are compared: the
    first resolutions held the options and the rounds only (``run`` and ``train`` came later),
    and results from before any was recorded cannot tell at all and count as current
    (``matrix.py --backfill`` records theirs, once, while the defaults they ran are today's)."""
    if stale(record):
        return True
    then = record.get("resolved")
    if then is None or record["variant"] not in VARIANTS or record["profile"] not in PROFILES:
        return False
    cell = _cell_of(record)
    now = resolved(cell, cell_config(cell, PROFILES[record["profile"]]))
    return now is None or any(now.get(k) != v for k, v in then.items())


def _cell_of(record: dict[str, Any]) -> Cell:
    return Cell(record["model"], record["variant"], record["target"], record["seed"])


def backfill(record: dict[str, Any]) -> dict[str, Any] | None:
    """Today's resolution of a result that recorded none, after checking what the result itself
    says about it: each round's target and fine-tuning epochs (``details.per_round``), its
    fine-tuning budget (but the memory layout) and its BN recalibration batches must be
    today's. None when there is nothing to record (Torch-Pruning's cells, outdated results,
    unknown variants or profiles).

    The method's option defaults leave no trace in a result, so a backfill asserts that they
    have not changed since it ran: run it before changing one, never after."""
    if record.get("resolved") is not None or stale(record):
        return None
    if record["variant"] not in VARIANTS or record["profile"] not in PROFILES:
        return None
    cell, profile = _cell_of(record), PROFILES[record["profile"]]
    config = cell_config(cell, profile)
    now = resolved(cell, config)
    if now is None:
        return None
    ran = [(r["target"], r["finetune_epochs"]) for r in record["details"]["per_round"]]
    plan = [(config.plan.goal(i + 1), r.epochs) for i, r in enumerate(config.plan.rounds)]
    budget = _beyond(dataclasses.asdict(profile.budget), *SPEED_ONLY)
    then = _beyond(record["budget"], *SPEED_ONLY)
    differs = [
        f"rounds (target, epochs) {ran}, today {plan}" if not _same_rounds(ran, plan) else "",
        f"budget {then}, today {budget}" if then != budget else "",
        f"BN recalibration {record.get('bn_recalibration')}, today {now['run']['bn_recalibration']}"
        if record.get("bn_recalibration") != now["run"]["bn_recalibration"]
        else "",
    ]
    if any(differs):
        raise ValueError(
            f"{record['cell']} ran {'; '.join(d for d in differs if d)}: the result is outdated and cannot be "
            "backfilled; delete it to rerun the cell"
        )
    return now


def _same_rounds(ran: list[tuple[float | None, int]], plan: list[tuple[float | None, int]]) -> bool:
    """Each round's (target, epochs) alike; a threshold run's targets are None on both sides."""

    def same_target(a: float | None, b: float | None) -> bool:
        return a == b if a is None or b is None else math.isclose(a, b, abs_tol=1e-9)

    return len(ran) == len(plan) and all(
        e0 == e1 and same_target(t0, t1) for (t0, e0), (t1, e1) in zip(ran, plan, strict=True)
    )


#: What a recorded resolution must hold for :func:`relabel` (the first ones held only these);
#: a variant's other options show only in the later ``run`` and ``train`` parts.
REQUIRED = ("method_options", "finetune_options", "rounds")


def relabel(record: dict[str, Any], variant: str) -> dict[str, Any]:
    """``record`` as a result of ``variant`` on the same model, target and seed: allowed only
    when its recorded resolution agrees with what ``variant`` resolves to today, so the run is
    the one that cell would make (a method default moved onto another variant's options, or a
    variant's options now spell out the old default it ran under: ``variant`` may be its own).
    As in :func:`outdated`, the parts recorded are compared, and the options and rounds must be
    among them; a resolution without the ``run`` and ``train`` parts also needs the two
    variants' other options (scope, floors, fine-tuning settings) alike. The record keeps the
    cell it ran as (``relabelled_from``), or, rewritten in place, its former variant definition
    (``relabelled_spec``)."""
    if variant not in VARIANTS or VARIANTS[variant].method == TP:
        raise ValueError(f"cannot relabel a result as {variant!r}: name a secateurs variant of the matrix")
    cell = Cell(record["model"], variant, record["target"], record["seed"])
    now = resolved(cell, cell_config(cell, PROFILES[record["profile"]]))
    then = record.get("resolved") or {}
    # The variant's options may differ (they are what moved); its fine-tuning mode and share,
    # which a resolution does not hold, may not. A result without its variant's definition ran
    # under today's (as :func:`stale` takes it).
    ran = record.get("variant_spec") or (VARIANTS[record["variant"]].spec() if record["variant"] in VARIANTS else {})
    target = VARIANTS[variant].spec()
    if _beyond(ran, "options") != _beyond(target, "options"):
        raise ValueError(
            f"{record['cell']} ran as {_beyond(ran, 'options')}, {variant} is {_beyond(target, 'options')}: "
            "run that cell instead"
        )
    if not {"run", "train"} <= then.keys():
        mine, theirs = _beyond(ran.get("options", {}), *REQUIRED), _beyond(target["options"], *REQUIRED)
        if mine != theirs:
            raise ValueError(
                f"{record['cell']} recorded no run-level resolution and its variant's other options {mine} are not "
                f"{variant}'s {theirs}: run that cell instead"
            )
    differs = sorted(k for k, v in then.items() if now.get(k) != v)
    missing = sorted(set(REQUIRED) - then.keys())
    if missing or differs:
        raise ValueError(
            f"{record['cell']} did not run what {cell.name} resolves to today "
            f"({'no ' + ', '.join(missing) + ' recorded' if missing else 'its ' + ', '.join(differs) + ' differ'}: "
            f"recorded {[then.get(k) for k in differs]}, today {[now.get(k) for k in differs]}): run that cell instead"
        )
    moved = record | {"cell": cell.name, "variant": variant, "variant_spec": target}
    if cell.name == record["cell"]:
        return moved | {"relabelled_spec": ran}
    return moved | {"relabelled_from": record.get("relabelled_from", record["cell"])}


def _beyond(mapping: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k not in keys}
