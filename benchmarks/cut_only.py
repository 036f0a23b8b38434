"""Which channels each criterion removes, judged with no fine-tuning: top-1 right after one
cut and BN recalibration, from one checkpoint, in global scope (the solver spreads the cut
over layers by score) and in layer scope (every layer loses the same share, to within the one
channel the solver's last step places by score, so the criteria differ only in *which*
channels of a layer go).

The matrix (matrix.py) records top-1 after the cut too, but only in each method's default
scope; layer scope separates "a worse choice within a layer" from "a worse spread over
layers".

    .venv/bin/python benchmarks/cut_only.py --checkpoint checkpoints/fashion-mnist/resnet20/model.safetensors
    .venv/bin/python benchmarks/cut_only.py --checkpoint CKPT --methods l1 fcs fcs:merge=true --scopes layer --budgets 0.5 0.75

A method may carry options after a colon, ``NAME:key=value,key=value`` (values read like
``secateurs prune --method-option``), e.g. ``fcs:merge=true``.

Results: results/cut_only_MODEL.{json,md}, or results/NAME.{json,md} with ``--name``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _common import command_line, machine, machine_line, markdown_table, write_results

from secateurs import load, read_meta
from secateurs.commands import checkpoint_dataset
from secateurs.commands._args import key_value
from secateurs.pipeline import prune
from secateurs.pipeline.run import top1_accuracy

RECAL_BATCHES = 20  # the pipeline's default (bn_recalibration.py)


def parse_method(spec: str) -> tuple[str, dict[str, Any]]:
    """``"fcs:merge=true"`` -> ``("fcs", {"merge": True})``, each value read as the CLI's
    ``--method-option KEY=VALUE`` reads it."""
    name, _, rest = spec.partition(":")
    try:
        return name, dict(key_value(item) for item in filter(None, rest.split(",")))
    except argparse.ArgumentTypeError:
        raise SystemExit(f"--methods {spec!r}: write NAME:key=value[,key=value], e.g. fcs:merge=true") from None


def cut_once(model, train_set, test_set, method: str, scope: str, budget: float, seed: int) -> dict[str, Any]:
    started = time.perf_counter()
    name, options = parse_method(method)
    pruned, res = prune(
        model,
        name,
        method_options=options,
        train_set=train_set,
        test_set=None,
        finetune="none",
        latency=False,
        evaluate_before=False,
        macs_reduction=budget,
        scope=scope,
        bn_recalibration=RECAL_BATCHES,
        seed=seed,
    )
    widths = [m.out_channels for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    return {
        "method": method,
        "scope": scope,
        "budget": budget,
        "seed": seed,
        "top1": top1_accuracy(pruned, test_set, torch.device("cpu")),
        "macs_reduction": 1 - res.after["macs"] / res.before["macs"],
        "params": res.after["params"],
        "conv_widths": widths,
        "time_s": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--methods", nargs="+", default=["l1", "fcs", "feature-l1", "random"])
    p.add_argument("--scopes", nargs="+", default=["global", "layer"], choices=["global", "layer"])
    p.add_argument("--budgets", type=float, nargs="+", default=[0.5], help="MACs reductions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", help="results/NAME.{json,md} (default: cut_only_MODEL)")
    args = p.parse_args(argv)
    if args.name is not None and (not args.name or Path(args.name).name != args.name):
        p.error(f"--name {args.name!r}: a file name without a folder, e.g. cut_only_resnet20_allocation")
    meta = read_meta(args.checkpoint)
    _, train_set = checkpoint_dataset(args.checkpoint, meta, None, "train", None)
    _, test_set = checkpoint_dataset(args.checkpoint, meta, None, "test", None)
    model = load(args.checkpoint)
    base = top1_accuracy(model, test_set, torch.device("cpu"))
    runs = []
    for budget in args.budgets:
        for scope in args.scopes:
            for method in args.methods:
                r = cut_once(model, train_set, test_set, method, scope, budget, args.seed)
                runs.append(r)
                print(f"{method} {scope} {budget}: top-1 {r['top1']:.2f}%", file=sys.stderr, flush=True)
    command = command_line("cut_only.py", argv)
    name = meta.get("run", {}).get("model") or args.checkpoint.parent.name
    rows = [
        [
            f"{100 * r['budget']:.0f}%",
            r["scope"],
            r["method"],
            f"{100 * r['macs_reduction']:.1f}",
            f"{r['params'] / 1e6:.3f}",
            f"{r['top1']:.2f}",
            " ".join(map(str, r["conv_widths"])),
        ]
        for r in runs
    ]
    data = {"machine": machine(), "command": command, "baseline_top1": base, "runs": runs}
    md = "\n\n".join(
        [
            f"# One cut, no fine-tuning: {name}",
            f"Machine: {machine_line(data['machine'])}",
            f"Command: `{command}`",
            f"Checkpoint `{args.checkpoint}`, top-1 {base:.2f}% on the full test set. Each row: one cut to the MACs "
            f"reduction, then BN recalibration on {RECAL_BATCHES} training batches of 128 (seed {args.seed}), no "
            "fine-tuning; top-1 on the full test set. One seed: the calibration batches (and fcs's and "
            "feature-l1's 256 samples) are its only randomness.",
            markdown_table(
                ["MACs target", "scope", "method", "MACs reduction (%)", "params (M)", "top-1 (%)", "conv widths"], rows
            ),
        ]
    )
    write_results(args.name or f"cut_only_{name}", data, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
