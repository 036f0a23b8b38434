"""Kernel pruning compared: HNSI (Zhu & Pei, Appl. Intell. 2022) and its three ablations against `l1` and
`l1-capped` filter pruning, at the same MACs and the same fine-tuning.

For each model (a cached Fashion-MNIST baseline, see baselines.py) and MACs reduction:

* ``hnsi`` reaches the reduction in kernel-sparse MACs (kernels kept), in two stages with
  fine-tuning after each, then is materialised (unread input channels removed with their
  producers, empty filters folded): its dense MACs fall only by what that removes;
* ``hnsi-single-stage`` (stage 2 alone), ``hnsi-no-rule`` (no at-least-one-kernel rule
  anywhere) and ``hnsi-rule-everywhere`` (the rule in high-level layers too) are the ablations;
* ``l1`` and ``l1-capped`` prune filters to the same MACs (dense = sparse for them); their
  runs are prune_filters.py's, shared through its cache.

Every run gets prune_filters.py's fine-tuning budget in total (hnsi: split over its stages).
Latency is measured afterwards for all runs back to back, as in prune_filters.py.

    .venv/bin/python benchmarks/prune_kernels.py --profile quick --models resnet56 vgg16

Results: results/prune_kernels_PROFILE.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import torch
from _common import command_line, machine, markdown_table, speedup_cells, write_report
from baselines import CACHE, DATASET, ensure_baseline
from prune_filters import BUDGETS, VARIANTS, _latency, cached_run

from secateurs import count_macs, count_params, load, read_meta
from secateurs.commands import checkpoint_dataset
from secateurs.pipeline.run import top1_accuracy

HNSI = {
    "hnsi": {},
    "hnsi-single-stage": {"single_stage": True},
    "hnsi-no-rule": {"at_least_one": "none"},
    "hnsi-rule-everywhere": {"at_least_one": "all"},
}
FILTERS = ["l1", "l1-capped"]
# prune_filters.run_one runs a variant as prune(model, method, **extra).
VARIANTS.update({name: ("hnsi", {"method_options": options}) for name, options in HNSI.items()})


def _shape_facts(path: Path, base: torch.nn.Module, shape: tuple[int, ...]) -> dict[str, Any]:
    """What the saved pruned model shows: dense and kernel-sparse MACs, params, input channels removed."""
    pruned = load(path)
    widths = {
        n: m.in_channels if hasattr(m, "in_channels") else m.in_features
        for n, m in pruned.named_modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    }
    removed = {
        n: (m.in_channels if hasattr(m, "in_channels") else m.in_features) - widths[n]
        for n, m in base.named_modules()
        if n in widths
    }
    return {
        "macs": count_macs(pruned, shape),
        "sparse_macs": count_macs(pruned, shape, sparse=True),
        "params": count_params(pruned),
        "inputs_removed": {n: k for n, k in removed.items() if k},
        "inputs_removed_total": sum(removed.values()),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=sorted(BUDGETS), default="quick")
    p.add_argument("--models", nargs="+", default=["resnet20", "resnet56", "vgg16"])
    p.add_argument("--reductions", nargs="+", type=float, default=[0.5, 0.75])
    p.add_argument("--methods", nargs="+", default=[*HNSI, *FILTERS])
    p.add_argument("--repeats", type=int, default=30, help="latency repeats per model and batch size")
    p.add_argument("--skip-latency", action="store_true", help="no latency (e.g. while the machine is shared)")
    p.add_argument(
        "--cached-only",
        action="store_true",
        help="report the runs already in the cache, list the others as not run, train nothing",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="one fine-tuning step per epoch, in a cache and results file of their own: proves the "
        "script runs, measures nothing",
    )
    args = p.parse_args(argv)
    budget = BUDGETS[args.profile]
    name = f"prune_kernels_{args.profile}"
    kernel_cache, filter_cache = CACHE / "prune_kernels" / args.profile, CACHE / "prune_filters" / args.profile
    if args.smoke:
        budget = dataclasses.replace(budget, max_steps_per_epoch=1)
        name += "_smoke"
        kernel_cache = filter_cache = CACHE / "prune_kernels_smoke" / args.profile
    data: dict[str, Any] = {"machine": machine(), "budget": budget.__dict__, "models": {}}
    sections: list[str] = []
    missing: list[str] = []
    for model in args.models:
        ckpt = ensure_baseline(model, args.profile)
        shape = tuple(read_meta(ckpt)["input_shape"])
        base_m = load(ckpt)
        base_top1 = top1_accuracy(
            base_m, checkpoint_dataset(ckpt, read_meta(ckpt), DATASET, "test", None)[1], torch.device("cpu")
        )
        base = {"top1": base_top1, "params": count_params(base_m), "macs": count_macs(base_m, shape)}
        runs: dict[tuple[float, str], dict] = {}
        for target in args.reductions:
            for method in args.methods:
                root = (kernel_cache if method in HNSI else filter_cache) / model
                rec = cached_run(root, model, ckpt, method, target, budget, missing if args.cached_only else None)
                if rec is not None:
                    rec["path"] = str(root / f"{method}-{int(round(100 * target))}" / "model.safetensors")
                    runs[(target, method)] = {**rec, **_shape_facts(Path(rec["path"]), base_m, shape)}
        if not args.skip_latency:
            base["latency_ms"] = _latency(ckpt, args.repeats)
            for rec in runs.values():
                rec["latency_ms"] = _latency(Path(rec["path"]), args.repeats)
        data["models"][model] = {"baseline": base, "runs": [dict(r, key=f"{m}@{t}") for (t, m), r in runs.items()]}
        lat_base = base.get("latency_ms")
        rows = [
            [
                "(unpruned)",
                "-",
                "-",
                "-",
                f"{base['params'] / 1e6:.3f}",
                f"{base_top1:.2f}",
                *speedup_cells(lat_base, lat_base),
                "-",
            ]
        ]
        for (target, method), r in runs.items():
            rows.append(
                [
                    method,
                    f"{100 * (1 - r['sparse_macs'] / base['macs']):.1f}",
                    f"{100 * (1 - r['macs'] / base['macs']):.1f}",
                    r["inputs_removed_total"],
                    f"{r['params'] / 1e6:.3f}",
                    f"{r['top1']:.2f}",
                    *speedup_cells(lat_base, r.get("latency_ms")),
                    r["rounds"],
                ]
            )
        sections.append(
            f"## {model}\n\n"
            + markdown_table(
                [
                    "method",
                    "kernel-sparse MACs reduction (%)",
                    "dense MACs reduction (%)",
                    "input channels removed",
                    "params (M)",
                    "top-1 after fine-tuning (%)",
                    "speed-up b1",
                    "speed-up b64",
                    "rounds",
                ],
                rows,
            )
        )
    data["command"] = command_line("prune_kernels.py", argv)
    intro = (
        f"Fine-tuning, the same for every method: {budget.describe()}; hnsi gives stage 1 half of it (rounded "
        "down) and stage 2 the rest, l1-capped runs 3 rounds. The target is the kernel-sparse MACs reduction "
        "(kernels kept); for filter pruning it equals the dense one. Dense MACs and params are of the "
        "materialised model; input channels removed: summed over the convs and linear layers of the model. "
        "Speed-up: median latency of the unpruned model over the pruned one, CPU, dense kernels (a "
        "kernel-sparse one would need sparse convolution kernels), measured back to back. Per-layer input "
        "channels removed are in the JSON."
    )
    title = f"Kernel pruning on Fashion-MNIST, profile `{args.profile}`" + (" (smoke test)" if args.smoke else "")
    write_report(name, data, title, intro, sections, missing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
