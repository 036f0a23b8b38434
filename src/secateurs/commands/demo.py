"""``secateurs demo``: the command line of :mod:`secateurs.demo` (train a baseline, prune
it with two methods, compare)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._args import add_dataset_args, field_default, logging_to_stderr
from ._command import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..demo import DemoConfig

    def default(name: str) -> Any:
        return field_default(DemoConfig, name)

    p.add_argument(
        "--out",
        type=Path,
        default=Path("runs/demo"),
        help="the demo's folder: a new or empty one, or an earlier demo's to reuse its baseline",
    )
    p.add_argument("--model", default=default("model"), help="model to train, see `secateurs models`")
    p.add_argument("--method", default=default("method"), help="the method compared with l1, see `secateurs methods`")
    add_dataset_args(p, default=default("dataset"))
    p.add_argument("--epochs", type=int, default=default("epochs"), help="baseline training epochs")
    p.add_argument(
        "--max-steps-per-epoch",
        type=int,
        default=default("max_steps_per_epoch"),
        help="cap on the baseline's optimizer steps per epoch (0: none)",
    )
    p.add_argument(
        "--finetune-epochs",
        type=int,
        default=default("finetune_epochs"),
        help="fine-tuning epochs of each pruned model",
    )
    p.add_argument(
        "--finetune-max-steps-per-epoch",
        type=int,
        default=default("finetune_max_steps_per_epoch"),
        help="cap on the fine-tuning steps per epoch (0: none)",
    )
    p.add_argument(
        "--latency",
        action=argparse.BooleanOptionalAction,
        default=default("latency"),
        help="time the models before and after pruning (the speed-up columns)",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="start over: delete the files an earlier demo wrote in --out (and nothing else), baseline included",
    )


def run(args: argparse.Namespace) -> None:
    from .. import demo

    logging_to_stderr()  # the pruning runs' progress
    config = demo.DemoConfig(
        model=args.model,
        method=args.method,
        dataset=args.dataset or demo.DemoConfig.dataset,
        data_dir=args.data_dir,
        dataset_options=dict(args.dataset_options),
        epochs=args.epochs,
        max_steps_per_epoch=args.max_steps_per_epoch or None,
        finetune_epochs=args.finetune_epochs,
        finetune_max_steps_per_epoch=args.finetune_max_steps_per_epoch or None,
        latency=args.latency,
    )
    demo.run(args.out, config, fresh=args.fresh)


COMMAND = Command(
    "demo",
    "the product in five minutes: train a baseline on Fashion-MNIST, prune it with fcs and l1, compare",
    add_arguments,
    run,
    examples="""examples:
  secateurs demo                                 # baseline, fcs and l1 at 50% MACs, comparison in runs/demo
  secateurs demo --method l1-capped --out runs/demo-capped
  secateurs demo --fresh                         # train the baseline again too""",
)
