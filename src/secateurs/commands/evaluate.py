"""``secateurs eval``: top-1/top-5 accuracy and loss of a checkpoint on a dataset split."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._args import FROM_HELP, add_arch_args, add_dataset_args, add_json_arg, arch_spec, print_result
from ._checkpoint import checkpoint_dataset
from ._command import Command


def evaluate_checkpoint(
    ckpt: Path,
    dataset: str | None,
    data_dir: str | None,
    split: str = "test",
    batch_size: int = 512,
    device: str = "auto",
    dataset_options: dict[str, Any] | None = None,
    arch: Any = None,
) -> dict[str, Any]:
    """``secateurs eval``; ``arch`` (an :class:`~secateurs.io._factory.ArchSpec`) rebuilds a model not in the zoo."""
    from ..data import LoaderConfig, as_loader
    from ..io import read_meta
    from ..io._factory import load_model
    from ..train import dist_info, evaluate
    from ..train.distributed import training_device

    dataset, data = checkpoint_dataset(ckpt, read_meta(ckpt), dataset, split, data_dir, dataset_options)
    dev = training_device(device, dist_info())
    model = load_model(ckpt, arch).to(dev)
    result = evaluate(
        model, as_loader(data, LoaderConfig(batch_size=batch_size, train=False, device=dev)), data.info.num_classes
    )
    return {"checkpoint": str(ckpt), "dataset": dataset, "split": split, **result.to_dict()}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="ckpt", required=True, type=Path, help=FROM_HELP)
    add_arch_args(p)
    add_dataset_args(p)
    p.add_argument("--split", default="test", help="dataset split to evaluate: train or test")
    p.add_argument("--batch-size", type=int, default=512, help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    add_json_arg(p)


def run(args: argparse.Namespace) -> None:
    result = evaluate_checkpoint(
        args.ckpt,
        args.dataset,
        args.data_dir,
        args.split,
        args.batch_size,
        args.device,
        dataset_options=dict(args.dataset_options),
        arch=arch_spec(args),
    )
    text = f"{args.ckpt}: {result['dataset']}/{result['split']} top1 {result['top1']:.2f}%"
    if "top5" in result:
        text += f" top5 {result['top5']:.2f}%"
    print_result(args, result, text + f" loss {result['loss']:.4f} ({result['samples']} samples)")


COMMAND = Command(
    "eval",
    "top-1/top-5 accuracy and loss of a checkpoint on a dataset split",
    add_arguments,
    run,
    examples="""examples:
  secateurs eval --from runs/r20                 # a run directory or its model.safetensors
  secateurs eval --from runs/r20/model.safetensors --split train --json""",
)
