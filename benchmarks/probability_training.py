"""Which training choices give probability pruning channels to remove: weight decay, epochs
and network slimming's BN sparsity term against the share of BN channels with
``P(y <= 0) >= tau`` and what
``probability`` (Zhao et al., J. Comput. Sci. Technol. 2022) removes at tau = 0.99, with no
fine-tuning and no BN recalibration (the method's own setting).

A channel gets a P near 1 when its BN shift ``beta`` is negative and large against its
scale ``|gamma|``. Weight decay pulls ``gamma`` towards 0 for channels the loss does not
need, so it is the first suspect; training length is the second; the third is an L1
penalty on ``gamma`` itself (``TrainConfig.bn_l1``, network slimming: Liu et al., ICCV
2017), which pulls unneeded scales to 0 at a constant rate instead of in proportion. Each
cell trains the same small depthwise separable network from the same seed on
Fashion-MNIST, changing one of them; nothing else differs.

    .venv/bin/python benchmarks/probability_training.py                   # the default grid
    .venv/bin/python benchmarks/probability_training.py --model test_mobilenet_v2 --weight-decays 5e-4 --epochs 2 4 8
    .venv/bin/python benchmarks/probability_training.py --bn-l1 1e-3 1e-2   # the grid plus two BN L1 cells

Trained runs are cached in cache/probability_training/ (rerunning reuses them). Results:
results/probability_training.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from _common import command_line, machine, machine_line, markdown_table, write_results
from baselines import CACHE, DATASET
from probability_distribution import THRESHOLDS, bn_probabilities, summarise

from secateurs import commands, load, read_meta
from secateurs.commands import checkpoint_dataset
from secateurs.pipeline import prune
from secateurs.pipeline.run import top1_accuracy

TAU = 0.99
#: The recipe every cell shares (baselines.py's, shortened); weight decay and epochs vary.
RECIPE = {"batch_size": 128, "lr": 0.1, "schedule": "onecycle", "progress": False}


def train_cell(model: str, weight_decay: float, epochs: int, steps: int | None, seed: int, bn_l1: float = 0.0) -> Path:
    """The checkpoint of one cell, trained once (an interrupted run is resumed)."""
    name = (
        f"{model}_wd{weight_decay:g}_e{epochs}"
        + (f"_s{steps}" if steps else "")
        + (f"_l1{bn_l1:g}" if bn_l1 else "")
        + f"_seed{seed}"
    )
    out = CACHE / "probability_training" / name
    ckpt = out / "model.safetensors"
    if ckpt.is_file() and (out / "metrics.jsonl").is_file():
        if len((out / "metrics.jsonl").read_text().splitlines()) >= epochs:
            return ckpt
    overrides: dict[str, Any] = {
        **RECIPE,
        "epochs": epochs,
        "weight_decay": weight_decay,
        "seed": seed,
        "bn_l1": bn_l1,
    }
    if steps:
        overrides["max_steps_per_epoch"] = steps
    commands.train_command(
        out,
        resume=(out / "state.safetensors").is_file(),
        model=model,
        dataset=DATASET,
        data_dir=None,
        overrides=overrides,
    )
    return ckpt


def measure_cell(ckpt: Path, test_set) -> dict[str, Any]:
    """P shares of the trained network, and probability at tau = 0.99 with no data at all."""
    meta = read_meta(ckpt)
    model = load(ckpt).eval()
    rows = summarise(bn_probabilities(model, meta["input_shape"]))
    before = top1_accuracy(model, test_set, torch.device("cpu"))
    pruned, res = prune(
        model,
        "probability",
        method_options={"tau": TAU},
        finetune="none",
        latency=False,
        evaluate_before=False,
        input_shape=tuple(meta["input_shape"]),
    )
    removed = res.rounds[0].channels_removed
    after = top1_accuracy(pruned, test_set, torch.device("cpu")) if removed else before
    return {
        "top1": before,
        "top1_pruned": after,
        "channels_removed": removed,
        "params_reduction": 1 - res.after["params"] / res.before["params"],
        "macs_reduction": 1 - res.after["macs"] / res.before["macs"],
        "p_rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="test_mobilenet_v2")
    p.add_argument("--weight-decays", type=float, nargs="+", default=[5e-5, 5e-4, 5e-3])
    p.add_argument("--epochs", type=int, nargs="+", default=[4], help="several: each at the middle weight decay")
    p.add_argument("--steps", type=int, default=100, help="steps per epoch (0: whole epochs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--bn-l1",
        type=float,
        nargs="*",
        default=[],
        help="BN sparsity strengths, each one more cell at the middle weight decay and epochs",
    )
    args = p.parse_args(argv)
    wd_mid = sorted(args.weight_decays)[len(args.weight_decays) // 2]
    e_mid = sorted(args.epochs)[len(args.epochs) // 2]
    cells = (
        [(wd, e_mid, 0.0) for wd in args.weight_decays]
        + [(wd_mid, e, 0.0) for e in args.epochs if e != e_mid]
        + [(wd_mid, e_mid, s) for s in args.bn_l1 if s]
    )
    results = []
    test_set = None
    for wd, epochs, bn_l1 in cells:
        ckpt = train_cell(args.model, wd, epochs, args.steps or None, args.seed, bn_l1)
        if test_set is None:
            _, test_set = checkpoint_dataset(ckpt, read_meta(ckpt), DATASET, "test", None)
        r = {"weight_decay": wd, "epochs": epochs, "bn_l1": bn_l1, **measure_cell(ckpt, test_set)}
        results.append(r)
        print(
            f"wd {wd:g}, {epochs} epochs, BN L1 {bn_l1:g}: {100 * r['params_reduction']:.1f}% params at tau {TAU}, "
            f"top-1 {r['top1']:.2f} -> {r['top1_pruned']:.2f}",
            file=sys.stderr,
            flush=True,
        )
    command = command_line("probability_training.py", argv)
    table = []
    for r in results:
        every = r["p_rows"][-1]
        table.append(
            [
                f"{r['weight_decay']:g}",
                r["epochs"],
                f"{r['bn_l1']:g}",
                f"{r['top1']:.2f}",
                *(f"{100 * every['share_p_at_least'][str(t)]:.1f}" for t in THRESHOLDS),
                f"{every['median_abs_gamma']:.3g}",
                r["channels_removed"],
                f"{100 * r['params_reduction']:.1f}",
                f"{r['top1_pruned'] - r['top1']:+.2f}",
            ]
        )
    per_type = [
        [
            f"{r['weight_decay']:g}",
            r["epochs"],
            f"{r['bn_l1']:g}",
            row["type"],
            row["channels"],
            f"{100 * row['share_p_at_least']['0.99']:.1f}",
        ]
        for r in results
        for row in r["p_rows"]
        if row["type"] != "all"
    ]
    data = {"machine": machine(), "command": command, "tau": TAU, "model": args.model, "results": results}
    steps = f"{args.steps} steps of batch 128 per epoch" if args.steps else "whole epochs"
    md = "\n\n".join(
        [
            "# What training gives probability pruning channels to remove",
            f"Machine: {machine_line(data['machine'])}",
            f"Command: `{command}`",
            f"`{args.model}` on {DATASET}, seed {args.seed}, {steps}, SGD lr 0.1 onecycle, augmented; one seed per "
            f"cell (a trend, not a significance test). Weight decay varies at {e_mid} epochs, epochs at weight decay "
            f"{wd_mid:g}, the BN sparsity term (*BN L1*: `bn_l1 * sum |gamma|` added to the loss, "
            f"`TrainConfig.bn_l1`) at both. *P >= t*: share of the BN channels before a ReLU-type activation; *removed*: what "
            f"`probability` at tau = {TAU} removes (no fine-tuning, no BN recalibration), and the top-1 it costs.",
            markdown_table(
                [
                    "weight decay",
                    "epochs",
                    "BN L1",
                    "top-1 (%)",
                    *(f"P >= {t} (%)" for t in THRESHOLDS),
                    "median abs(gamma)",
                    "channels removed",
                    "params reduction (%)",
                    "top-1 change",
                ],
                table,
            ),
            "P >= 0.99 per layer type:",
            markdown_table(["weight decay", "epochs", "BN L1", "BN after", "channels", "P >= 0.99 (%)"], per_type),
        ]
    )
    write_results("probability_training", data, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
