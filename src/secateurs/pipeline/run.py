"""``secateurs.prune``: the loop. Every round the method cuts (its own round, or score ->
solve -> cut), BN statistics are recalibrated, the round fine-tunes, and its record is
kept; then the method's last step, and the model is measured against the unpruned one.

A bad option, an unknown method, missing data or a run_dir holding another run are refused
before anything runs. A few refusals can only come mid-run, from what the run finds: no
``auto`` candidate can make the cut, fcs's feature maps are not finite. The model passed in
is never modified either way -- the pruned one is a copy.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .._copy import copy_model
from ..errors import ConfigError
from ..graph import trace
from ..measure import compare_latency
from ..methods import RoundContext
from ..select import CostModel, floors_for
from ..train import STATE_FILE
from ..train.distributed import process_group
from ._data import RunData, calibration_batches, top1_accuracy  # noqa: F401  (top1_accuracy: imported from here)
from ._state import RunState, channels, snapshot
from .config import PruneConfig
from .plan import RunPlan
from .progress import Progress, load_progress, refuse_leftovers
from .recalibration import recalibration_plan
from .result import PruneResult, RoundRecord

log = logging.getLogger("secateurs.prune")
_snapshot = snapshot  # the loop's measurements, by the name tests replace to see that nothing ran


def prune(
    model: nn.Module,
    method: str | None = None,
    *,
    config: PruneConfig | None = None,
    train_set: Any = None,
    test_set: Any = None,
    input_shape: tuple[int, ...] | None = None,
    example_inputs: torch.Tensor | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    **options: Any,
) -> tuple[nn.Module, PruneResult]:
    """Prune a copy of ``model`` to a MACs or params target and return it with its record.

    Args:
        model: the trained network (left unchanged): a zoo model or any nn.Module that
            torch.fx traces.
        method: a registered method name (``secateurs methods``); or set it in ``config``.
        config: a :class:`PruneConfig`; or give its fields as keywords, e.g.
            ``prune(model, "l1-capped", macs_reduction=0.5, finetune_epochs=6, ...)``.
        train_set: for fine-tuning and data-driven criteria: an in-memory ``ImageDataset``
            (:func:`secateurs.load_dataset`), any map-style torch ``Dataset`` whose samples are
            ``(image_tensor, label)`` ready for the model, or a ``DataLoader`` of them (see
            :func:`secateurs.data.as_loader`).
        test_set: for the accuracy before, right after pruning and after fine-tuning; same kinds.
        input_shape: one sample's ``(C, H, W)``; default from ``example_inputs``, else from the
            data's ``.info`` (a ``DatasetInfo``; a user's dataset may have none: then give one).
        example_inputs: a batch such as ``torch.randn(1, 3, 224, 224)``, the alternative to
            ``input_shape`` (its shape without the batch dimension is used).
        run_dir: fine-tuning runs are written under it (``finetune-<round>``), and the state
            after every cut and every round (``progress.safetensors``).
        resume: continue the interrupted run in ``run_dir`` with the same configuration.

    Raises:
        ConfigError: a bad option, missing data or a run_dir holding another run, before
            anything runs; or, mid-run, a cut the data makes impossible (see above).
        PruningError: the engine refused a removal; the model passed in is unchanged
            whatever round it happened in (only the copy was being pruned).
    """
    if config is None:
        config = PruneConfig.from_dict({"method": method or "l1-capped", **options})
    elif method is not None or options:
        given = sorted([*(["method"] if method is not None else []), *options])
        raise ConfigError(
            f"give the options either in config or as keywords, not both: {', '.join(given)} given beside "
            "config; set them on it instead, e.g. dataclasses.replace(config, ...)"
        )
    plan = config.plan
    data = RunData.of(plan, train_set, test_set, input_shape, example_inputs)
    if resume and run_dir is None:
        raise ConfigError("resume=True needs the run_dir of the run to continue")
    if run_dir is not None:
        refuse_leftovers(Path(run_dir), resume)
    with process_group(plan.device):  # one group for all rounds (fine-tuning joins it)
        return run_plan(plan, model, data, Path(run_dir) if run_dir is not None else None, resume)


def run_plan(
    plan: RunPlan, model: nn.Module, data: RunData, run_dir: Path | None = None, resume: bool = False
) -> tuple[nn.Module, PruneResult]:
    """The loop, inside the run's process group; ``model`` is left unchanged."""
    started = time.perf_counter()
    state = _start(plan, model, data, run_dir, resume)
    for r in range(len(state.progress.records) + 1, len(plan.rounds) + 1):
        record = state.resumed_cut(r) or _cut(state, r)
        _finetune(state, record)
        state.progress.records.append(record)
        state.checkpoint(r, "done")
    return _finish(state, model, started)


def _start(plan: RunPlan, model: nn.Module, data: RunData, run_dir: Path | None, resume: bool) -> RunState:
    """A copy of ``model`` to prune and what the run measured before, or where it stopped."""
    device = plan.device
    reference = copy_model(model).to(device) if plan.keeps_unpruned else None
    example = torch.zeros((1, *data.shape), device=device)
    graph = None
    if resume:
        pruned, progress = load_progress(run_dir, model, plan)
        pruned.to(device)
        plan.method.restore(pruned)
        stage = "after its cut, before its fine-tuning" if progress.stage == "cut" else "finished"
        log.info("resuming %s from round %d of %d, %s", run_dir, progress.round, len(plan.rounds), stage)
    else:
        pruned = copy_model(model).to(device)
        plan.method.check_model(pruned, example, plan.options)  # before any data is read
        graph = trace(pruned, example)  # the first round's, whose shapes also give the MACs
        cost = CostModel.of(pruned, example, graph.calls)
        test_set = data.test_set if plan.config.evaluate_before else None
        before = _snapshot(pruned, plan, data.shape, test_set, macs=int(cost.macs))
        floors = floors_for(cost.widths, plan.config.min_keep_fraction)
        progress = Progress(
            before=before, channels_before=channels(pruned), floors=[[m, k, n] for (m, k), n in floors.items()]
        )
    train_set, c = data.train_set, plan.config
    calibration = calibration_batches(train_set, c.calib_samples, c.seed, device) if train_set is not None else None
    recalibration = recalibration_plan(plan, train_set, calibration_batches)
    state = RunState(plan, data, pruned, reference, progress, run_dir, example, calibration, recalibration)
    state.graph = graph
    return state


def _cut(state: RunState, r: int) -> RoundRecord:
    """Round ``r``'s cut by the method, then BN recalibration, measured and saved."""
    plan, rounds, goal, c = state.plan, len(state.plan.rounds), state.plan.goal(r), state.plan.config
    t0 = time.perf_counter()
    log.info("round %d/%d: scoring channels (%s)", r, rounds, plan.method.name)
    ctx = RoundContext(
        state.pruned,
        state.take_graph(),
        plan.options,
        state.calibration,
        c.seed,
        unpruned=state.reference,
        example=state.example,
        goal=goal,
        final_goal=plan.goal(rounds),
        share=plan.rounds[r - 1].share,
        metric=c.metric,
        scope=c.scope,
        floors=state.floors,
        reference=state.base,
        round=r,
        rounds=rounds,
        round_to=c.round_to,
        measure=lambda m: plan.measure(m, state.data.shape),
        judge=state.judge if state.data.holdout is not None else None,
    )
    outcome = plan.method.round(ctx)
    scoring_s, surgery_s = outcome.timing(t0, time.perf_counter())
    achieved = 1 - state.measure_cut(outcome.calls) / state.base
    recal = state.recalibration.run(state.pruned, r, state.top1)
    top1 = recal.get("top1_after_recalibration", recal["top1_after_cut"])
    record = RoundRecord.after_cut(r, goal, achieved, top1, outcome, (scoring_s, surgery_s), recal)
    if record.note:
        state.progress.notes.append(f"round {r}: {record.note}")
        log.warning("round %d: %s", r, record.note)
    state.progress.cut = record
    state.checkpoint(r, "cut")
    log.info(
        "round %d/%d: removed %d channels, %s reduction %.2f%% (target %s), top-1 %s",
        *(r, rounds, record.channels_removed, c.metric, 100 * achieved),
        *("none" if goal is None else f"{100 * goal:.2f}%", "n/a" if top1 is None else f"{top1:.2f}%"),
    )
    return record


def _finetune(state: RunState, record: RoundRecord) -> None:
    """The round's fine-tuning (when it has epochs), its figures filled into ``record``."""
    r, plan = record.round, state.plan
    epochs, t0, result = plan.rounds[r - 1].epochs, time.perf_counter(), None
    if epochs:
        sub = state.run_dir / f"finetune-{r}" if state.run_dir is not None else None
        result = plan.finetuning.run(
            state.pruned,
            state.reference,
            state.data.train_set,
            state.data.test_set if plan.config.eval_each_epoch else None,
            plan.rounds[r - 1].train,
            sub,
            meta={"pruning": {"method": plan.method.name, "round": r}},
            resume=sub is not None and (sub / STATE_FILE).is_file(),
        )
        state.sync_from_main()
    top1 = result.final.get("test_top1") if result is not None and result.final else None
    if result is not None and top1 is None:
        top1 = state.top1()
    record.top1_after_finetune, record.finetune_epochs, record.finetune_s = top1, epochs, time.perf_counter() - t0


def _finish(state: RunState, model: nn.Module, started: float) -> tuple[nn.Module, PruneResult]:
    """The method's last step, the measurements after, and the run's result."""
    plan, pruned, records = state.plan, state.pruned, state.progress.records
    last = records[-1]
    top1 = last.top1_after_finetune if last.finetune_epochs else last.top1_after_pruning
    finalized = plan.method.finalize(pruned, state.example)
    if finalized:  # the last step changed the model: measure again
        top1 = None
        if state.recalibration.batches:  # materialisation changed the layers the statistics were for
            recal = state.recalibration.run(pruned, len(plan.rounds) + 1, state.top1)
            # The time goes to the log: ``finalized`` holds what the step did, equal on a resumed run.
            log.info("BN recalibration after finalizing: %.2f s", recal.pop("recalibration_s"))
            finalized["recalibration"], top1 = recal, recal["top1_after_recalibration"]
    macs = None if finalized else state.macs  # fine-tuning changes no shape
    after = _snapshot(pruned, plan, state.data.shape, state.data.test_set, top1, macs)
    before = state.progress.before
    latency = _compare_latency(model, state, before, after) if plan.config.latency and plan.dist.is_main else None
    achieved = 1 - after[plan.target_on] / state.base
    target, notes = plan.config.target, state.progress.notes
    if target is not None and abs(achieved - target) > 0.01 and not notes:
        notes.append(plan.method.off_target_note(achieved, target, last.achieved))
    timing = {
        "scoring": sum(x.scoring_s for x in records),
        "surgery": sum(x.surgery_s for x in records),
        "finetune": sum(x.finetune_s for x in records),
        "total": time.perf_counter() - started,
    }
    pruned.eval()
    return pruned, PruneResult(
        method=plan.method.name,
        metric=plan.config.metric,
        target=target,
        achieved=achieved,
        before=before,
        after=after,
        rounds=records,
        channels_before=state.progress.channels_before,
        channels_after=state.channels(),
        timing_s=timing,
        config=plan.config.to_dict(),
        notes=notes,
        finalized=finalized,
        latency=latency,
    )


def _compare_latency(
    model: nn.Module, state: RunState, before: dict[str, Any], after: dict[str, Any]
) -> dict[str, Any]:
    """Time the unpruned and the pruned model interleaved in one pass at the end, not minutes
    apart (see :mod:`secateurs.measure.compare`); the medians go into the two snapshots, the
    whole comparison with its verdict on reliability into the result. One process times: the
    others would disturb it."""
    log.info("timing latency before and after, interleaved")
    c = compare_latency(model, state.pruned, state.data.shape, device=state.plan.device, labels=("before", "after"))
    before["latency_ms"] = {str(n): b.a.median_ms for n, b in c.batches.items()}
    after["latency_ms"] = {str(n): b.b.median_ms for n, b in c.batches.items()}
    return c.to_dict()
