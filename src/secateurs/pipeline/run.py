"""``secateurs.prune``: score, solve the budget, cut, fine-tune -- for ``rounds`` rounds.

Every refusal (bad option, unknown method, missing data) happens before the model is
touched; the model passed in is never modified -- the pruned one is a copy.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..graph import remove_units, trace
from ..measure import compare_latency, count_macs, count_params
from ..measure.macs import kernels_per_layer
from ..methods import Method, RoundContext, RoundOutcome, get_method
from ..train import STATE_FILE, dist_info
from ..train.distributed import DistInfo, process_group, resolve_device
from ._data import calibration_batches, input_shape_of, top1_accuracy
from .budget import CostModel, floors_for, solve
from .config import PruneConfig
from .finetune import finetune, get_finetune_mode
from .progress import Progress, load_progress, save_progress
from .recalibration import Recalibration, recalibration_plan
from .result import PruneResult, RoundRecord
from .scores import unit_scores

log = logging.getLogger("secateurs.prune")


def _channels(model: nn.Module) -> dict[str, int]:
    return {
        name: (m.out_channels if hasattr(m, "out_channels") else m.out_features)
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))
    }


def _snapshot(
    model: nn.Module,
    shape: tuple[int, ...],
    test_set: Any,
    device: torch.device,
    top1: float | None = None,
    sparse: bool = False,
) -> dict[str, Any]:
    """Params, MACs (and kernel-sparse MACs and kernels per conv if ``sparse``) and test top-1
    (``top1`` when it is already known); latency is measured apart, see :func:`_compare_latency`."""
    if top1 is None:
        top1 = top1_accuracy(model, test_set, device)
    out: dict[str, Any] = {"params": count_params(model), "macs": count_macs(model, shape), "top1": top1}
    if sparse:
        out["sparse_macs"] = count_macs(model, shape, sparse=True)
        out["kernels"] = kernels_per_layer(model)  # the report's kernels-kept-per-layer figure
    return out


def _compare_latency(
    model: nn.Module,
    pruned: nn.Module,
    shape: tuple[int, ...],
    device: torch.device,
    before: dict[str, Any],
    after: dict[str, Any],
) -> dict[str, Any]:
    """Time the unpruned and the pruned model interleaved in one pass at the end, not minutes
    apart (see :mod:`secateurs.measure.compare`); the medians go into the two snapshots, the
    whole comparison with its verdict on reliability into the result."""
    log.info("timing latency before and after, interleaved")
    c = compare_latency(model, pruned, shape, device=device, labels=("before", "after"))
    before["latency_ms"] = {str(n): b.a.median_ms for n, b in c.batches.items()}
    after["latency_ms"] = {str(n): b.b.median_ms for n, b in c.batches.items()}
    return c.to_dict()


def _agree(per_unit: dict[int, torch.Tensor], device: torch.device) -> dict[int, torch.Tensor]:
    """Under DDP every rank takes rank 0's unit scores. A data-driven criterion computed on
    each rank's device can differ in the last bits, and a tie or a K-means boundary that
    falls differently must not cut different channels on different ranks."""
    if not (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    ):
        return per_unit
    out = {}
    for gi in sorted(per_unit):  # the same keys everywhere: every rank traced the same model
        t = per_unit[gi].to(device=device, dtype=torch.float64).contiguous()
        torch.distributed.broadcast(t, 0)
        out[gi] = t.cpu()
    return out


def _score_and_cut(spec: Method, ctx: RoundContext) -> RoundOutcome:
    """The default round: score, rank units, solve the budget, remove."""
    scores = spec.score(ctx)
    per_unit = _agree(
        scores if spec.unit_scores else unit_scores(ctx.graph, scores, spec.normalise), ctx.example.device
    )
    plan = solve(
        ctx.graph,
        per_unit,
        CostModel.of(ctx.model, ctx.example),
        ctx.goal,
        ctx.metric,
        ctx.scope,
        ctx.floors,
        reference=ctx.reference,
        round_to=ctx.round_to,
    )
    scored_at = time.perf_counter()
    remove_units(ctx.model, ctx.graph, plan.units, ctx.example)
    return RoundOutcome(len(plan.units), plan.note, scored_at=scored_at)


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
        ConfigError: a bad option or missing data, before anything runs.
        PruningError: the engine refused a removal; the model passed in is unchanged
            whatever round it happened in (only the copy was being pruned).
    """
    if config is None:
        config = PruneConfig.from_dict({"method": method or "l1-capped", **options})
    elif method is not None or options:
        raise ConfigError("give the options either in config or as keywords, not both")
    spec = get_method(config.method)
    options_obj = spec.make_options(config.method_options)
    if spec.kernel_level and (config.metric != "macs" or config.scope != "global"):
        raise ConfigError(
            f"method {spec.name!r} prunes kernels, and its target is on kernel-sparse MACs: give "
            "macs_reduction instead of params_reduction, and no scope (it has its own: groups, then "
            f"layers), got {config.metric} reduction and scope {config.scope!r}"
        )
    input_shape = input_shape_of(input_shape, example_inputs, train_set if train_set is not None else test_set)
    epochs = config.epochs_per_round()
    if any(epochs) and train_set is None:
        raise ConfigError(
            f"fine-tuning ({config.resolved_finetune()}, {sum(epochs)} epochs) needs a train_set; "
            "give one, or set finetune='none'"
        )
    if spec.needs_data and train_set is None:
        raise ConfigError(
            f"method {spec.name!r} scores channels on calibration samples of the training set: give a train_set"
        )
    if config.bn_recalibration and train_set is None:
        raise ConfigError(f"bn_recalibration={config.bn_recalibration} draws batches from a train_set: give one, or 0")
    run_dir = Path(run_dir) if run_dir is not None else None
    device = resolve_device(config.device, dist_info())
    if resume and run_dir is None:
        raise ConfigError("resume=True needs the run_dir of the run to continue")
    with process_group(device) as info:  # one group for all rounds (fine-tuning joins it)
        return _prune(
            model, spec, options_obj, config, train_set, test_set, tuple(input_shape), run_dir, device, info, resume
        )


def _sync_from_main(model: nn.Module, info: DistInfo) -> None:
    """Every rank takes rank 0's weights and buffers, so the next round scores the same model
    everywhere (BN running statistics can differ per rank after fine-tuning without sync_bn)."""
    if info.enabled:
        for t in model.state_dict().values():
            torch.distributed.broadcast(t, 0)


def _prune(
    model: nn.Module,
    spec: Method,
    options_obj: Any,
    config: PruneConfig,
    train_set: Any,
    test_set: Any,
    shape: tuple[int, ...],
    run_dir: Path | None,
    device: torch.device,
    info: DistInfo,
    resume: bool = False,
) -> tuple[nn.Module, PruneResult]:
    started = time.perf_counter()
    schedule = config.schedule()
    shares, epochs = [share for share, _ in schedule], [e for _, e in schedule]
    mode = config.resolved_finetune()
    reference = copy.deepcopy(model).to(device) if get_finetune_mode(mode).needs_reference else None
    latency = config.latency and info.is_main  # one process times; the others would disturb it
    example = torch.zeros((1, *shape), device=device)
    if resume:
        pruned, progress = load_progress(run_dir, model, config.to_dict())
        pruned.to(device)
        if spec.restore is not None:
            spec.restore(pruned)
        floors = {(m, k): n for m, k, n in progress.floors}
        log.info(
            "resuming %s from round %d of %d, %s",
            run_dir,
            progress.round,
            config.resolved_rounds(),
            "after its cut, before its fine-tuning" if progress.stage == "cut" else "finished",
        )
    else:
        pruned = copy.deepcopy(model).to(device)
        before = _snapshot(
            pruned, shape, test_set if config.evaluate_before else None, device, sparse=spec.kernel_level
        )
        floors = floors_for(CostModel.of(pruned, example).widths, config.min_keep_fraction)
        progress = Progress(
            before=before, channels_before=_channels(pruned), floors=[[m, k, n] for (m, k), n in floors.items()]
        )
    before = progress.before
    base = float(before[config.metric])
    calibration = (
        calibration_batches(train_set, config.calib_samples, config.seed, device) if train_set is not None else None
    )
    recalibration = recalibration_plan(config, train_set, device, info, calibration_batches)
    records = [RoundRecord(**r) for r in progress.records]
    notes = progress.notes
    rounds = len(epochs)

    def checkpoint(r: int, stage: str) -> None:
        progress.round, progress.stage = r, stage
        progress.records = [asdict(x) for x in records]
        if run_dir is not None and info.is_main:
            save_progress(run_dir, pruned, progress, config.to_dict())

    for r in range(len(records) + 1, rounds + 1):
        goal = None if config.target is None else config.target * shares[r - 1]
        if progress.stage == "cut" and progress.round == r:  # resumed between the cut and its fine-tuning
            cut = progress.cut
            log.info(
                "round %d/%d: cut before the interruption (%d channels), fine-tuning it now", r, rounds, cut["removed"]
            )
        else:
            cut = _cut_round(
                spec,
                options_obj,
                config,
                pruned,
                example,
                shape,
                goal,
                floors,
                base,
                calibration,
                test_set,
                device,
                (r, rounds),
                recalibration,
            )
            cut["goal"] = goal
            progress.cut = cut
            if cut["note"]:
                notes.append(f"round {r}: {cut['note']}")
                log.warning("round %d: %s", r, cut["note"])
            checkpoint(r, "cut")
            log.info(
                "round %d/%d: removed %d channels, %s reduction %.2f%% (target %s), top-1 %s",
                r,
                rounds,
                cut["removed"],
                config.metric,
                100 * cut["achieved"],
                "none" if goal is None else f"{100 * goal:.2f}%",
                "n/a" if cut["top1"] is None else f"{cut['top1']:.2f}%",
            )
        t0, result = time.perf_counter(), None
        if epochs[r - 1]:
            sub = run_dir / f"finetune-{r}" if run_dir is not None else None
            again = sub is not None and (sub / STATE_FILE).is_file()
            result = finetune(
                pruned,
                mode,
                reference,
                train_set,
                test_set if config.eval_each_epoch else None,
                config.train_config(epochs[r - 1]),
                sub,
                meta={"pruning": {"method": spec.name, "round": r}},
                resume=again,
                options=config.finetune_options,
            )
            _sync_from_main(pruned, info)
        top1_ft = result.final.get("test_top1") if result is not None and result.final else None
        if result is not None and top1_ft is None:
            top1_ft = top1_accuracy(pruned, test_set, device)
        records.append(
            RoundRecord(
                r,
                goal,
                cut["achieved"],
                cut["removed"],
                cut["top1"],
                top1_ft,
                epochs[r - 1],
                cut["scoring_s"],
                cut["surgery_s"],
                time.perf_counter() - t0,
                cut["note"],
                cut["details"],
                **cut.get("recalibration", {}),
            )
        )
        checkpoint(r, "done")
    last = records[-1]
    finalized = {}
    if spec.finalize is not None:  # it changes the model: measure again
        finalized = spec.finalize(pruned, example)
        top1 = None
        if recalibration.batches:  # materialisation changed the layers the statistics were for
            recal = recalibration.run(pruned, rounds + 1, lambda: top1_accuracy(pruned, test_set, device))
            # The time goes to the log: ``finalized`` holds what the step did, equal on a resumed run.
            log.info("BN recalibration after finalizing: %.2f s", recal.pop("recalibration_s"))
            finalized["recalibration"], top1 = recal, recal["top1_after_recalibration"]
    else:
        top1 = last.top1_after_finetune if last.finetune_epochs else last.top1_after_pruning
    after = _snapshot(pruned, shape, test_set, device, top1, sparse=spec.kernel_level)
    latency_report = _compare_latency(model, pruned, shape, device, before, after) if latency else None
    achieved = 1 - after["sparse_macs" if spec.kernel_level else config.metric] / base
    if config.target is not None and abs(achieved - config.target) > 0.01 and not notes:
        if spec.kernel_level:
            notes.append(
                f"achieved {100 * achieved:.2f}% kernel-sparse MACs reduction against a target of "
                f"{100 * config.target:.1f}% (the masked model: {100 * last.achieved:.2f}%): finalizing "
                "removed the filters no kernel read any more and folded those left constant, with the "
                "kernels that produced or read them"
            )
        else:
            notes.append(
                f"achieved {100 * achieved:.2f}% against a target of {100 * config.target:.1f}%: the solver "
                "stops at the first step that reaches the target, and on this model one step (one channel "
                "in global scope, one more channel of every group in layer scope) is worth more than a point"
            )
    timing = {
        "scoring": sum(x.scoring_s for x in records),
        "surgery": sum(x.surgery_s for x in records),
        "finetune": sum(x.finetune_s for x in records),
        "total": time.perf_counter() - started,
    }
    pruned.eval()
    return pruned, PruneResult(
        spec.name,
        config.metric,
        config.target,
        achieved,
        before,
        after,
        records,
        progress.channels_before,
        _channels(pruned),
        timing,
        config.to_dict(),
        notes,
        finalized,
        latency=latency_report,
    )


def _cut_round(
    spec: Method,
    options_obj: Any,
    config: PruneConfig,
    pruned: nn.Module,
    example: torch.Tensor,
    shape: tuple[int, ...],
    goal: float | None,
    floors: dict,
    base: float,
    calibration: Any,
    test_set: Any,
    device: torch.device,
    round_of: tuple[int, int],
    recalibration: Recalibration,
) -> dict[str, Any]:
    """One round's selection, surgery and BN recalibration, in place; what it did, JSON-able."""
    t0 = time.perf_counter()
    log.info("round %d/%d: scoring channels (%s)", *round_of, spec.name)
    graph = trace(pruned, example)
    ctx = RoundContext(
        pruned,
        graph,
        options_obj,
        calibration,
        config.seed,
        example=example,
        goal=goal,
        metric=config.metric,
        scope=config.scope,
        floors=floors,
        reference=base,
        round=round_of[0],
        rounds=round_of[1],
        round_to=config.round_to,
    )
    outcome = spec.prune_round(ctx) if spec.prune_round is not None else _score_and_cut(spec, ctx)
    t2 = time.perf_counter()
    t1 = outcome.scored_at if outcome.scored_at is not None else t2
    value = count_macs(pruned, shape, sparse=spec.kernel_level) if config.metric == "macs" else count_params(pruned)
    recal = recalibration.run(pruned, round_of[0], lambda: top1_accuracy(pruned, test_set, device))
    return {
        "removed": outcome.removed,
        "achieved": 1 - value / base,
        "note": outcome.note,
        "details": outcome.details,
        "top1": recal.get("top1_after_recalibration", recal["top1_after_cut"]),
        "recalibration": recal,
        "scoring_s": t1 - t0,
        "surgery_s": t2 - t1,
    }
