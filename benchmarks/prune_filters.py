"""Filter pruning compared: l1-capped (Kumar et al., Appl. Intell. 2021), every baseline criterion, and
Torch-Pruning's magnitude pruner, at equal MACs and equal fine-tuning.

For each model (a cached Fashion-MNIST baseline, see baselines.py) and MACs reduction,
every method prunes the same checkpoint to the same MACs target and is fine-tuned with
the same budget (``--finetune-epochs`` in total, whatever the method's round count).

Two phases, so that accuracy runs can share the machine but timings cannot:

1. prune + fine-tune, one run per (model, reduction, method), cached in
   ``cache/prune_filters/PROFILE/MODEL/`` (an interrupted benchmark resumes);
2. latency of the baseline and every pruned model, measured back to back in one pass.

    .venv/bin/python benchmarks/prune_filters.py --profile quick --models resnet20 resnet56

Results: results/prune_filters_PROFILE.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from _common import command_line, machine, markdown_table, speedup_cells, write_report
from _tp import tp_magnitude_prune
from baselines import CACHE, DATASET, ensure_baseline

from secateurs import count_macs, count_params, load, measure, read_meta, save
from secateurs.commands import checkpoint_dataset
from secateurs.pipeline import PruneConfig, prune
from secateurs.pipeline.finetune import finetune
from secateurs.pipeline.run import top1_accuracy

OURS = ["l1-capped", "l1-capped-1r", "l1", "l2", "fpgm", "bn-scale", "feature-l1", "fcs", "random"]
TP = "tp-magnitude"
# Benchmark entries that are a method with other options: l1-capped's criterion without its
# 3-round schedule, to tell the two apart.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {"l1-capped-1r": ("l1-capped", {"rounds": 1})}


@dataclass(frozen=True)
class Budget:
    epochs: int  # fine-tuning epochs in total
    max_steps_per_epoch: int | None
    lr: float = 0.01
    batch_size: int = 128

    def describe(self) -> str:
        """The fine-tuning budget as the reports' introductions state it."""
        steps = f" of at most {self.max_steps_per_epoch} steps" if self.max_steps_per_epoch else ""
        return f"{self.epochs} epochs in total{steps}, batch {self.batch_size}, SGD lr {self.lr} cosine"


# quick: sized for 2 CPU cores (3 short epochs of 60 steps = 23k samples of fine-tuning);
# full: for a GPU.
BUDGETS = {"quick": Budget(epochs=3, max_steps_per_epoch=60), "full": Budget(epochs=30, max_steps_per_epoch=None)}


def _train_overrides(b: Budget) -> dict[str, Any]:
    o: dict[str, Any] = {"lr": b.lr, "batch_size": b.batch_size, "progress": False}
    if b.max_steps_per_epoch:
        o["max_steps_per_epoch"] = b.max_steps_per_epoch
    return o


def run_one(ckpt: Path, method: str, target: float, budget: Budget, out: Path) -> dict[str, Any]:
    """One pruning run: the record (also written to ``out/record.json``) and ``out/model.safetensors``."""
    meta = read_meta(ckpt)
    _, train_set = checkpoint_dataset(ckpt, meta, DATASET, "train", None)
    _, test_set = checkpoint_dataset(ckpt, meta, DATASET, "test", None)
    model = load(ckpt)
    shape = tuple(meta["input_shape"])
    t0 = time.perf_counter()
    if method == TP:
        config = PruneConfig(
            method="l1",
            macs_reduction=target,
            finetune_epochs=budget.epochs,
            finetune_train=_train_overrides(budget),
            latency=False,
        )
        base = {"params": count_params(model), "macs": count_macs(model, shape)}
        pruned = tp_magnitude_prune(model, shape, target)
        cut_s = time.perf_counter() - t0
        top1_cut = top1_accuracy(pruned, test_set, torch.device("cpu"))
        finetune(pruned, "tft", model, train_set, None, config.train_config(budget.epochs), None)
        record = {
            "top1_after_pruning": top1_cut,
            "top1": top1_accuracy(pruned, test_set, torch.device("cpu")),
            "rounds": 1,
            "prune_s": cut_s,
            "finetune_s": time.perf_counter() - t0 - cut_s,
            "achieved": 1 - count_macs(pruned, shape) / base["macs"],
        }
    else:
        name, extra = VARIANTS.get(method, (method, {}))
        pruned, res = prune(
            model,
            name,
            macs_reduction=target,
            finetune_epochs=budget.epochs,
            finetune_train=_train_overrides(budget),
            train_set=train_set,
            test_set=test_set,
            latency=False,
            eval_each_epoch=False,
            evaluate_before=False,
            **extra,
        )
        record = {
            "top1_after_pruning": res.rounds[-1].top1_after_pruning,
            "top1": res.after["top1"],
            "rounds": len(res.rounds),
            "prune_s": res.timing_s["scoring"] + res.timing_s["surgery"],
            "finetune_s": res.timing_s["finetune"],
            "achieved": res.achieved,
            "per_round": [r.__dict__ for r in res.rounds],
            "notes": res.notes,
        }
    record.update(
        {
            "method": method,
            "target": target,
            "params": count_params(pruned),
            "macs": count_macs(pruned, shape),
            "wall_s": time.perf_counter() - t0,
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    save(pruned, out / "model.safetensors", {k: meta[k] for k in ("dataset", "input_shape", "normalisation")})
    (out / "record.json").write_text(json.dumps(record, indent=2))
    return record


def _latency(path: Path, repeats: int) -> dict[str, float]:
    m = measure(load(path), tuple(read_meta(path)["input_shape"]), repeats=repeats, warmup=10)
    return {b: v["median_ms"] for b, v in m.to_dict()["latency"]["batches"].items()}


def cached_run(
    root: Path, model: str, ckpt: Path, method: str, target: float, budget: Budget, missing: list[str] | None
) -> dict[str, Any] | None:
    """The run's record, from the cache under ``root`` or run now (None: not cached and
    ``missing``, a list the run's name is added to, says not to run)."""
    out = root / f"{method}-{int(round(100 * target))}"
    if (out / "record.json").exists():
        return json.loads((out / "record.json").read_text())
    if missing is not None:
        missing.append(f"{model} {method} at {target:.0%}")
        return None
    print(f"[{model}] {method} at {target:.0%} ...", file=sys.stderr, flush=True)
    rec = run_one(ckpt, method, target, budget, out)
    print(
        f"[{model}] {method} at {target:.0%}: top-1 {rec['top1']:.2f}% ({rec['wall_s']:.0f}s)",
        file=sys.stderr,
        flush=True,
    )
    return rec


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=sorted(BUDGETS), default="quick")
    p.add_argument("--models", nargs="+", default=["resnet20", "resnet56", "vgg16"])
    p.add_argument("--reductions", nargs="+", type=float, default=[0.5, 0.75])
    p.add_argument("--methods", nargs="+", default=OURS + [TP])
    p.add_argument("--repeats", type=int, default=30, help="latency repeats per model and batch size")
    p.add_argument("--skip-latency", action="store_true", help="phase 1 only (e.g. while the machine is shared)")
    p.add_argument(
        "--cached-only",
        action="store_true",
        help="report the runs already in the cache, list the others as not run, train nothing",
    )
    args = p.parse_args(argv)
    budget = BUDGETS[args.profile]
    torch.set_num_threads(torch.get_num_threads())
    data: dict[str, Any] = {"machine": machine(), "budget": budget.__dict__, "models": {}}
    sections: list[str] = []
    missing: list[str] = []
    for model in args.models:
        ckpt = ensure_baseline(model, args.profile)
        base_eval = top1_accuracy(
            load(ckpt), checkpoint_dataset(ckpt, read_meta(ckpt), DATASET, "test", None)[1], torch.device("cpu")
        )
        root = CACHE / "prune_filters" / args.profile / model
        runs: dict[tuple[float, str], dict] = {}
        for target in args.reductions:
            for method in args.methods:
                rec = cached_run(root, model, ckpt, method, target, budget, missing if args.cached_only else None)
                if rec is not None:
                    runs[(target, method)] = rec
        lat_base = None
        if not args.skip_latency:
            lat_base = _latency(ckpt, args.repeats)
            for (target, method), rec in runs.items():
                rec["latency_ms"] = _latency(
                    root / f"{method}-{int(round(100 * target))}" / "model.safetensors", args.repeats
                )
        base_m = load(ckpt)
        shape = tuple(read_meta(ckpt)["input_shape"])
        base_info = {
            "top1": base_eval,
            "params": count_params(base_m),
            "macs": count_macs(base_m, shape),
            "latency_ms": lat_base,
        }
        data["models"][model] = {"baseline": base_info, "runs": [dict(r, key=f"{m}@{t}") for (t, m), r in runs.items()]}
        rows = [
            [
                "(unpruned)",
                "-",
                f"{base_info['params'] / 1e6:.3f}",
                f"{base_info['macs'] / 1e6:.1f}",
                "-",
                f"{base_eval:.2f}",
                *speedup_cells(lat_base, lat_base),
                "-",
            ]
        ]
        for (target, method), r in runs.items():
            rows.append(
                [
                    method,
                    f"{100 * r['achieved']:.1f}",
                    f"{r['params'] / 1e6:.3f}",
                    f"{r['macs'] / 1e6:.1f}",
                    f"{r['top1_after_pruning']:.2f}",
                    f"{r['top1']:.2f}",
                    *speedup_cells(lat_base, r.get("latency_ms")),
                    f"{r['prune_s']:.1f}",
                ]
            )
        sections.append(
            f"## {model}\n\n"
            + markdown_table(
                [
                    "method",
                    "MACs reduction (%)",
                    "params (M)",
                    "MACs (M)",
                    "top-1 after pruning (%)",
                    "top-1 after fine-tuning (%)",
                    "speed-up b1",
                    "speed-up b64",
                    "scoring + surgery (s)",
                ],
                rows,
            )
        )
    data["command"] = command_line("prune_filters.py", argv)
    intro = (
        f"Fine-tuning, the same for every method: {budget.describe()} (per round for multi-round methods: "
        "l1-capped runs 3 rounds of 1 epoch; `l1-capped-1r` is its criterion in one round). `tp-magnitude` is "
        "Torch-Pruning's MagnitudePruner (L1, global) with its channel ratio bisected to the same MACs target, "
        "then the same fine-tuning. Speed-up: median latency of the unpruned model over the pruned one, CPU, "
        "measured back to back."
    )
    write_report(
        f"prune_filters_{args.profile}",
        data,
        f"Filter pruning on Fashion-MNIST, profile `{args.profile}`",
        intro,
        sections,
        missing,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
