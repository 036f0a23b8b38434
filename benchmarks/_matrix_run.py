"""One cell of the matrix: prune the baseline with a variant to its target, fine-tune the
profile's budget, evaluate, time b64 inference, and write ``CELL.json`` atomically.

The seed is the whole run's: calibration sampling (scoring and BN recalibration),
fine-tuning order and augmentation. Everything the tables need is in the one file, so the
report never reopens a model.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from _common import machine
from _matrix_config import cell_config, resolved, write_record
from _matrix_spec import KERNEL_LEVEL, RECAL_BATCHES, TP, VARIANTS, Cell, Profile
from _tp import tp_magnitude_prune

from secateurs import PruneConfig, count_macs, count_params, load, prune, read_meta
from secateurs.commands import checkpoint_dataset
from secateurs.data import ImageDataset
from secateurs.measure.latency import measure_latency
from secateurs.pipeline.finetune import finetune
from secateurs.pipeline.run import calibration_batches, top1_accuracy


@dataclass
class CellResult:
    """What one run measured; ``CELL.json`` is ``asdict`` of it."""

    cell: str
    profile: str
    model: str
    variant: str
    method: str
    target: str
    seed: int
    budget: dict[str, Any]  # the profile's fine-tuning budget
    finetune: str
    finetune_epochs: int  # what this variant got of it
    bn_recalibration: Any  # batches, 0/None when off, or "not available" in this secateurs
    baseline: dict[str, Any]
    achieved: float  # reduction of the target's metric (kernel-sparse MACs for hnsi; params for "own")
    params: int
    macs: int
    sparse_macs: int
    top1_cut_raw: float | None  # right after the last cut, before BN recalibration
    top1_cut: float | None  # right after the last cut, after recalibration when it ran
    top1: float | None  # at the end (after fine-tuning, or after the cut without it)
    rounds: int
    latency_b64_ms: dict[str, float]  # {"baseline", "pruned"}: medians, timed alternately
    speedup_b64: float
    wall_s: float
    cpu_s: float  # this process's CPU time, all threads
    finetune_s: float
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    variant_spec: dict[str, Any] = field(default_factory=dict)  # Variant.spec() when it ran
    #: What the configuration resolved to when it ran (``_matrix_config.resolved``): a method
    #: default changed since makes the result outdated even though the variant's spec did not.
    resolved: dict[str, Any] | None = None


@dataclass
class _Run:
    """What a cut and its fine-tuning produced, Torch-Pruning's or secateurs's alike."""

    model: torch.nn.Module
    raw: float | None  # top-1 right after the last cut
    recal: float | None  # after BN recalibration; None when it did not run
    top1: float | None  # at the end
    rounds: int
    recal_batches: Any
    finetune_s: float
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def _recal_split(last_round: dict[str, Any]) -> tuple[float | None, float | None]:
    """(top-1 before, after BN recalibration) right after the last cut, from its round record
    (a secateurs without recalibration records only the first: ``top1_after_pruning``)."""
    if "top1_after_cut" not in last_round:
        return last_round.get("top1_after_pruning"), None
    return last_round["top1_after_cut"], last_round.get("top1_after_recalibration")


def _latency(
    base: torch.nn.Module, pruned: torch.nn.Module, shape: tuple[int, ...], device: torch.device, repeats: int
) -> dict[str, float]:
    """b64 medians of the baseline and the pruned model, timed in two alternating passes
    each, so that both see the same load from the runs sharing the machine."""
    times: dict[str, list[float]] = {"baseline": [], "pruned": []}
    for _ in range(2):
        for key, net in (("baseline", base), ("pruned", pruned)):
            out = measure_latency(net.to(device), shape, batch_sizes=(64,), warmup=3, repeats=repeats)
            times[key].append(out["batches"][64]["median_ms"])
    return {k: statistics.median(v) for k, v in times.items()}


def _tp_run(
    model: torch.nn.Module,
    config: PruneConfig,
    train_set: ImageDataset,
    test_set: ImageDataset,
    shape: tuple[int, ...],
    device: torch.device,
) -> _Run:
    """Torch-Pruning's cut, BN recalibration with the harness's own batches (Torch-Pruning has
    none; the cut is recorded before and after it), then the same fine-tuning."""
    from secateurs.train import recalibrate_bn

    pruned = tp_magnitude_prune(model, shape, config.target).to(device)
    raw = top1_accuracy(pruned, test_set, device)
    batches = calibration_batches(train_set, RECAL_BATCHES * 128, config.seed, device, batch_size=128)
    done = recalibrate_bn(pruned, batches())
    recal = top1_accuracy(pruned, test_set, device)
    t1 = time.perf_counter()
    epochs = config.epochs_per_round()[0]
    if epochs:
        finetune(pruned, "tft", model, train_set, None, config.train_config(epochs), None)
    return _Run(
        model=pruned,
        raw=raw,
        recal=recal,
        top1=top1_accuracy(pruned, test_set, device) if epochs else recal,
        rounds=1,
        recal_batches=done.batches,
        finetune_s=time.perf_counter() - t1,
    )


def _secateurs_run(
    model: torch.nn.Module, config: PruneConfig, train_set: ImageDataset, test_set: ImageDataset
) -> _Run:
    """``secateurs.prune`` with the cell's configuration (BN recalibration is the pipeline's)."""
    pruned, res = prune(model, config=config, train_set=train_set, test_set=test_set)
    last = asdict(res.rounds[-1])
    raw, recal = _recal_split(last)
    return _Run(
        model=pruned,
        raw=raw,
        recal=recal,
        top1=res.after["top1"],
        rounds=len(res.rounds),
        recal_batches=last.get("recalibration_batches", "not available"),
        finetune_s=res.timing_s["finetune"],
        notes=list(res.notes),
        details={
            "inputs_removed": res.finalized.get("inputs_removed_total"),
            "auto": res.rounds[-1].details.get("auto"),  # auto's candidates and choice (None otherwise)
            "per_round": [{k: v for k, v in asdict(r).items() if k != "details"} for r in res.rounds],
        },
    )


def run_cell(cell: Cell, profile: Profile, ckpt: Path, baseline: dict[str, Any], out: Path) -> CellResult:
    """Run ``cell`` from checkpoint ``ckpt`` and write ``out`` (atomically) when it is done."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    torch.manual_seed(cell.seed)
    meta = read_meta(ckpt)
    options = baseline.get("dataset_options") or None
    train_set = checkpoint_dataset(ckpt, meta, None, "train", None, options)[1]
    test_set = checkpoint_dataset(ckpt, meta, None, "test", None, options)[1]
    shape = tuple(meta["input_shape"])
    config = cell_config(cell, profile)
    device = torch.device(profile.device)
    model = load(ckpt)
    v = VARIANTS[cell.variant]
    run = (
        _tp_run(model, config, train_set, test_set, shape, device)
        if v.method == TP
        else _secateurs_run(model, config, train_set, test_set)
    )
    pruned = run.model.eval()
    sparse = count_macs(pruned.cpu(), shape, sparse=True)
    macs, params = count_macs(pruned, shape), count_params(pruned)
    measured = {"macs": sparse if cell.variant in KERNEL_LEVEL else macs, "params": params}
    metric = "macs" if cell.target.startswith("macs") else "params"  # own: probability's, a params claim
    latency = _latency(model.eval(), pruned, shape, device, profile.latency_repeats)
    result = CellResult(
        cell=cell.name,
        profile=profile.name,
        model=cell.model,
        variant=cell.variant,
        method=v.method,
        target=cell.target,
        seed=cell.seed,
        budget=asdict(profile.budget),
        finetune=v.finetune,
        finetune_epochs=sum(config.epochs_per_round()) if v.finetune != "none" else 0,
        bn_recalibration=run.recal_batches,
        baseline=baseline,
        achieved=1 - measured[metric] / baseline[metric],
        params=params,
        macs=macs,
        sparse_macs=sparse,
        top1_cut_raw=run.raw,
        top1_cut=run.recal if run.recal is not None else run.raw,
        top1=run.top1,
        rounds=run.rounds,
        latency_b64_ms=latency,
        speedup_b64=latency["baseline"] / latency["pruned"],
        wall_s=time.perf_counter() - wall0,
        cpu_s=time.process_time() - cpu0,
        finetune_s=run.finetune_s,
        notes=run.notes,
        details=run.details,
        machine=machine(),
        variant_spec=v.spec(),
        resolved=resolved(cell, config),
    )
    write_record(out, asdict(result))
    return result
