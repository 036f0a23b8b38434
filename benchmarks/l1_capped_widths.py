"""Where l1-capped's cuts land: the width every conv keeps after one cut, after the default
three cuts with their statistics taken over the filters left (option ``scale=current``), and
after three cuts scored on the unpruned layers' statistics (``scale=unpruned``), and after
three cuts that reach the one-cut allocation in steps (``allocation=unpruned``), at one
MACs target, without fine-tuning between the cuts (so the weights never change and only the
scaling can move a channel).

    .venv/bin/python benchmarks/l1_capped_widths.py --checkpoint benchmarks/checkpoints/fashion-mnist/resnet20/model.safetensors

Results: results/l1_capped_widths.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from _common import command_line, machine, write_report

from secateurs import count_params, load, read_meta
from secateurs.commands import checkpoint_dataset
from secateurs.pipeline import prune

#: column -> the prune() options of the cut (no fine-tuning: every epoch count is 0).
CUTS: dict[str, dict[str, Any]] = {
    "one cut": {"rounds": 1},
    "3 cuts, scale current": {"rounds": 3, "method_options": {"scale": "current"}},
    "3 cuts, scale unpruned": {"rounds": 3, "method_options": {"scale": "unpruned"}},
    "3 cuts, allocation unpruned": {"rounds": 3, "method_options": {"allocation": "unpruned"}},
}


def widths(model: torch.nn.Module) -> dict[str, int]:
    return {name: m.out_channels for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}


def cut_widths(
    base: torch.nn.Module, train_set: Any, macs_reduction: float
) -> tuple[dict[str, dict[str, int]], dict[str, int], dict[str, float]]:
    """Per column of :data:`CUTS`: the widths kept, the params, the MACs reduction reached
    (``base`` itself is left as it was: prune works on a copy)."""
    kept, params, achieved = {}, {}, {}
    for column, options in CUTS.items():
        pruned, result = prune(
            base,
            "l1-capped",
            macs_reduction=macs_reduction,
            finetune="none",
            train_set=train_set,
            latency=False,
            evaluate_before=False,
            **options,
        )
        kept[column], params[column], achieved[column] = widths(pruned), count_params(pruned), result.achieved
    return kept, params, achieved


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--macs-reduction", type=float, default=0.5)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    meta = read_meta(args.checkpoint)
    train_set = checkpoint_dataset(args.checkpoint, meta, None, "train", None, None)[1]
    base = load(args.checkpoint)
    kept, params, achieved = cut_widths(base, train_set, args.macs_reduction)
    names = list(widths(base))
    header = "| conv | unpruned | " + " | ".join(CUTS) + " |"
    lines = [header, "|" + "---|" * (len(CUTS) + 2)]
    lines += [f"| {n} | {widths(base)[n]} | " + " | ".join(str(kept[c][n]) for c in CUTS) + " |" for n in names]
    lines.append("| params | " + f"{count_params(base):,} | " + " | ".join(f"{params[c]:,}" for c in CUTS) + " |")
    data = {
        "machine": machine(),
        "command": command_line("l1_capped_widths.py", argv),
        "checkpoint": str(args.checkpoint),
        "macs_reduction": args.macs_reduction,
        "widths": kept,
        "params": params,
        "macs_reduction_reached": achieved,
    }
    intro = (
        f"`l1-capped` to {100 * args.macs_reduction:.0f}% fewer MACs from `{args.checkpoint}`, its default cut "
        "shares (5/9, 8/9 and all of the target), BN recalibration after each cut, no fine-tuning. Widths: "
        "output channels of every conv."
    )
    write_report("l1_capped_widths", data, "Where l1-capped's cuts land", intro, ["\n".join(lines)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
