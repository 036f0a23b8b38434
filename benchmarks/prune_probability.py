"""Probability-based channel pruning (Zhao et al., J. Comput. Sci. Technol. 2022) with no
fine-tuning, against `bn-scale` and `l1` at the same params reduction with no fine-tuning,
with and without shift fusion, and a sweep of tau (params reduction against accuracy, plotted).

    .venv/bin/python benchmarks/prune_probability.py --profile quick --models mobilenet_v2 shufflenet_v2

Results: results/prune_probability_PROFILE.{json,md} and prune_probability_PROFILE.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch
from _common import RESULTS, machine, machine_line, markdown_table, write_results
from baselines import CACHE, DATASET, ensure_baseline

from secateurs import load, read_meta
from secateurs.commands import checkpoint_dataset
from secateurs.pipeline import prune
from secateurs.pipeline.run import top1_accuracy

TAUS = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99]
HEADLINE_TAU = 0.99
# Params reductions compared at (besides the one tau = 0.99 gives): short-trained baselines
# have few channels near P = 1, so the headline tau alone may remove nothing.
REDUCTIONS = [0.1, 0.2]


def _run(model, test_set, method: str, base_top1: float, **options: Any) -> dict[str, Any]:
    # Evaluating is most of the cost; a run that removed nothing left the model as it was.
    pruned, res = prune(
        model,
        method,
        test_set=None,
        finetune="none",
        latency=False,
        evaluate_before=False,
        input_shape=(test_set.info.in_channels, test_set.info.image_size, test_set.info.image_size),
        **options,
    )
    removed = res.rounds[0].channels_removed
    top1 = top1_accuracy(pruned, test_set, torch.device("cpu")) if removed else base_top1
    details = res.rounds[0].details
    return {
        "method": method,
        "options": {k: v for k, v in options.items()},
        "top1": top1,
        "params": res.after["params"],
        "macs": res.after["macs"],
        "params_reduction": 1 - res.after["params"] / res.before["params"],
        "macs_reduction": 1 - res.after["macs"] / res.before["macs"],
        "removed": res.rounds[0].channels_removed,
        "cases": details.get("cases"),
        "tau": details.get("tau"),
        "time_s": res.timing_s["total"],
    }


def bench_model(name: str, profile: str) -> dict[str, Any]:
    ckpt = ensure_baseline(name, profile)
    meta = read_meta(ckpt)
    _, test_set = checkpoint_dataset(ckpt, meta, DATASET, "test", None)
    model = load(ckpt)
    base_top1 = top1_accuracy(model, test_set, torch.device("cpu"))
    out: dict[str, Any] = {"baseline_top1": base_top1, "sweep": [], "compare": []}
    for tau in TAUS:
        r = _run(model, test_set, "probability", base_top1, method_options={"tau": tau})
        out["sweep"].append(r)
        print(
            f"[{name}] tau {tau}: {100 * r['params_reduction']:.1f}% params, top-1 {r['top1']:.2f}%",
            file=sys.stderr,
            flush=True,
        )
    head = next(r for r in out["sweep"] if r["tau"] == HEADLINE_TAU)
    out["compare"].append(head)
    out["compare"].append(
        _run(model, test_set, "probability", base_top1, method_options={"tau": HEADLINE_TAU, "fuse": False})
    )
    targets = ([head["params_reduction"]] if head["params_reduction"] > 0 else []) + REDUCTIONS
    for target in targets:
        out["compare"].append(_run(model, test_set, "probability", base_top1, params_reduction=target))
        out["compare"].append(
            _run(model, test_set, "probability", base_top1, params_reduction=target, method_options={"fuse": False})
        )
        for method in ("bn-scale", "l1"):
            out["compare"].append(_run(model, test_set, method, base_top1, params_reduction=target))
        print(f"[{name}] compared at {100 * target:.1f}% params", file=sys.stderr, flush=True)
    return out


def _plot(results: dict[str, Any], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, res in results.items():
        xs = [100 * r["params_reduction"] for r in res["sweep"]]
        ys = [r["top1"] for r in res["sweep"]]
        (line,) = ax.plot(xs, ys, marker="o", label=f"{name} probability (tau sweep)")
        ax.axhline(res["baseline_top1"], color=line.get_color(), linestyle=":", linewidth=1)
        for r in res["sweep"]:
            ax.annotate(f"{r['tau']}", (100 * r["params_reduction"], r["top1"]), fontsize=7)
        for r in res["compare"]:
            if r["method"] in ("bn-scale", "l1"):
                ax.scatter([100 * r["params_reduction"]], [r["top1"]], marker="x", color=line.get_color())
                ax.annotate(r["method"], (100 * r["params_reduction"], r["top1"]), fontsize=7)
    ax.set_xlabel("params reduction (%)")
    ax.set_ylabel("test top-1, no fine-tuning (%)")
    ax.set_title("Probability pruning on Fashion-MNIST (dotted: unpruned)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="quick")
    p.add_argument("--models", nargs="+", default=["mobilenet_v2", "shufflenet_v2"])
    args = p.parse_args(argv)
    results = {}
    for name in args.models:  # each model's runs are cached, so models can be run one at a time
        cached = CACHE / "prune_probability" / args.profile / f"{name}.json"
        if cached.is_file():
            results[name] = json.loads(cached.read_text())
            continue
        results[name] = bench_model(name, args.profile)
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(results[name], indent=2))
    command = "python benchmarks/prune_probability.py " + " ".join(argv if argv is not None else sys.argv[1:])
    png = RESULTS / f"prune_probability_{args.profile}.png"
    RESULTS.mkdir(parents=True, exist_ok=True)
    _plot(results, png)
    sections = []
    for name, res in results.items():
        rows = [["(unpruned)", "-", "-", "-", f"{res['baseline_top1']:.2f}", "-", "-"]]
        for r in res["compare"]:
            label = r["method"]
            if r["method"] == "probability":
                fused = r["options"].get("method_options", {}).get("fuse", True)
                solved = "params_reduction" in r["options"]
                label += f" tau={r['tau']:.4g}" + (" (solved)" if solved else "") + ("" if fused else ", no fusion")
            rows.append(
                [
                    label,
                    f"{100 * r['params_reduction']:.1f}",
                    f"{100 * r['macs_reduction']:.1f}",
                    r["removed"],
                    f"{r['top1']:.2f}",
                    f"{r['top1'] - res['baseline_top1']:+.2f}",
                    ", ".join(f"{k}: {v}" for k, v in (r["cases"] or {}).items()) or "-",
                ]
            )
        sweep = [
            [
                f"{r['tau']}",
                f"{100 * r['params_reduction']:.1f}",
                f"{100 * r['macs_reduction']:.1f}",
                r["removed"],
                f"{r['top1']:.2f}",
            ]
            for r in res["sweep"]
        ]
        sections.append(
            f"## {name}\n\nAt tau = {HEADLINE_TAU}, and at the same params reductions, no fine-tuning:\n\n"
            + markdown_table(
                [
                    "method",
                    "params reduction (%)",
                    "MACs reduction (%)",
                    "channels removed",
                    "top-1 (%)",
                    "vs unpruned",
                    "cases (BN before / after the DW conv)",
                ],
                rows,
            )
            + "\n\nSweep of tau (probability, fused):\n\n"
            + markdown_table(
                ["tau", "params reduction (%)", "MACs reduction (%)", "channels removed", "top-1 (%)"], sweep
            )
        )
    data = {"machine": machine(), "command": command, "results": results}
    md = "\n\n".join(
        [
            f"# Probability pruning on Fashion-MNIST, profile `{args.profile}`",
            f"Machine: {machine_line(data['machine'])}",
            f"Command: `{command}`",
            "No fine-tuning anywhere. Compared at the params reduction tau = 0.99 gives (when it removes anything) and at "
            f"{', '.join(f'{100 * r:.0f}%' for r in REDUCTIONS)}: probability with tau solved for the reduction, with and "
            "without fusion, and `bn-scale` and `l1` (global ranking) at the same reduction. Cases: `single` is a channel with one BN+ReLU point; "
            "`yes/no` etc. are the flags of the BN before and after a depthwise conv. "
            f"Plot: `{png.name}`.",
            *sections,
        ]
    )
    write_results(f"prune_probability_{args.profile}", data, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
