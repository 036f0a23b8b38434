"""``secateurs train``: a model from the zoo trained from scratch into a run directory.

A training run directory holds ``run.json`` (model, dataset and training options: enough
to resume), ``metrics.jsonl``, ``model.safetensors`` and ``state.safetensors``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .._atomic import atomic_write_text
from ..errors import ConfigError
from ._args import add_dataset_args, add_overwrite_arg, one_of
from ._command import Command
from ._flags import Flags

RUN_FILE = "run.json"
#: What ``secateurs train`` writes into its run directory, and nothing else.
TRAIN_FILES = (RUN_FILE, "model.safetensors", "state.safetensors", "metrics.jsonl")
#: ``--stem``: the zoo's two stems, or ``auto`` to pick one from the image size (:func:`stem_for`).
STEMS = ("auto", "cifar", "imagenet")


def stem_for(image_size: int, stem: str = "auto") -> str:
    """The zoo stem to use: ``cifar`` for images up to 64 px, ``imagenet`` above."""
    return ("cifar" if image_size <= 64 else "imagenet") if stem == "auto" else stem


def build_for_dataset(model_name: str, info: Any, stem: str = "auto", **kwargs: Any) -> nn.Module:
    from ..models import create_model

    return create_model(
        model_name,
        num_classes=info.num_classes,
        in_channels=info.in_channels,
        stem=stem_for(info.image_size, stem),
        **kwargs,
    )


@dataclass(frozen=True)
class TrainRun:
    """What a training run is, resolved once from the command line or from a run to resume:
    everything ``run.json`` holds."""

    model: str
    dataset: str
    data_dir: str | None
    dataset_options: dict[str, Any]
    stem: str
    config: Any  # TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dataset": self.dataset,
            "data_dir": self.data_dir,
            "dataset_options": self.dataset_options,
            "stem": self.stem,
            "train": self.config.to_dict(),
        }


def train_command(
    out: Path,
    resume: bool,
    model: str | None,
    dataset: str | None,
    data_dir: str | None,
    stem: str = "auto",
    overrides: dict[str, Any] | None = None,
    dataset_options: dict[str, Any] | None = None,
    overwrite: bool = False,
):
    """``secateurs train``: start a run in ``out``, or continue it with ``resume``.

    Everything that can be refused is checked before anything is written. A new run
    claims its files in ``out`` (see :mod:`secateurs.io.outdir`): one that exists is
    refused unless ``overwrite``, which replaces those files and nothing else.
    """
    from ..data import load_dataset
    from ..io.outdir import claim, discard
    from ..train import dist_info, train
    from ..train.trainer import check_run_dir

    out, overrides = Path(out), dict(overrides or {})
    outputs = [out / name for name in TRAIN_FILES]
    info = dist_info()
    # Under torchrun the disk is judged by rank 0 alone: the ranks start unsynchronised, so
    # another rank could find the run.json rank 0 has just written and refuse its own run.
    # A refusal on rank 0 ends the job (torchrun stops the other ranks).
    judge = resume or info.is_main
    if judge and (resume or not overwrite):  # an existing run is offered --resume first
        check_run_dir(out, resume)
    if resume:
        saved = read_run(out)
        run = _resumed_run(out, saved, model, dataset, data_dir, overrides, dataset_options)
    else:
        run = _new_run(model, dataset, data_dir, stem, overrides, dataset_options)
        if judge:
            claim(outputs, overwrite=overwrite)
    if run.config.batch_size % info.world_size:
        raise ConfigError(
            f"--batch-size {run.config.batch_size} is the global batch and must divide evenly over the "
            f"{info.world_size} processes"
        )
    train_set = load_dataset(run.dataset, "train", run.data_dir, **run.dataset_options)
    test_set = load_dataset(run.dataset, "test", run.data_dir, **run.dataset_options)
    torch.manual_seed(run.config.seed)
    net = build_for_dataset(run.model, train_set.info, run.stem)
    if overwrite and not resume:
        # Every rank, so that no rank's trainer takes the old state for a run to resume;
        # run.json is left to the atomic replace below (rank 0 may have written it already).
        discard(p for p in outputs if p.name != RUN_FILE)
    # A new run writes its run.json; a resumed one rewrites it only when extended (so that a
    # later --resume keeps the new epoch count).
    if info.is_main and (not resume or run.config.epochs != saved["train"]["epochs"]):
        written = run.to_dict() if not resume else {**saved, "train": run.config.to_dict()}
        atomic_write_text(out / RUN_FILE, json.dumps(written, indent=2))
    meta = {"run": {"model": run.model, "dataset": run.dataset}}
    return train(net, train_set, test_set, run.config, run_dir=out, resume=resume, meta=meta)


def _new_run(
    model: str | None,
    dataset: str | None,
    data_dir: str | None,
    stem: str,
    overrides: dict[str, Any],
    dataset_options: dict[str, Any] | None,
) -> TrainRun:
    from ..train import TrainConfig

    if model is None or dataset is None:
        raise ConfigError("secateurs train needs --model and --dataset (or --resume --out RUN_DIR)")
    return TrainRun(model, dataset, data_dir, dataset_options or {}, stem, TrainConfig.from_dict(overrides))


def _resumed_run(
    out: Path,
    saved: dict[str, Any],
    model: str | None,
    dataset: str | None,
    data_dir: str | None,
    overrides: dict[str, Any],
    dataset_options: dict[str, Any] | None,
) -> TrainRun:
    """The run saved in ``out``, refusing any option given that differs from it (except the
    ones a resumed run may change: ``RESUME_FREE``, and ``epochs``, which may extend it)."""
    from ..train import TrainConfig
    from ..train.trainer import EXTENDABLE, RESUME_FREE

    given = {
        "model": model,
        "dataset": dataset,
        "dataset_options": dataset_options,
        **{k: v for k, v in overrides.items() if k not in RESUME_FREE | EXTENDABLE},
    }
    was = {
        "model": saved["model"],
        "dataset": saved["dataset"],
        "dataset_options": saved.get("dataset_options", {}),
        **TrainConfig().to_dict(),  # a field added since the run was saved: its default
        **saved["train"],
    }
    clash = {k: (v, was.get(k)) for k, v in given.items() if v is not None and v != was.get(k)}
    if clash:
        raise ConfigError(
            f"--resume continues the run in {str(out)!r} exactly as it was started; these options "
            f"differ from it (given, saved): {clash}. Start a new run to change them."
        )
    config = TrainConfig.from_dict(
        {
            **saved["train"],
            **{k: v for k, v in overrides.items() if k in RESUME_FREE},
            "epochs": _resume_epochs(out, saved["train"]["epochs"], overrides.get("epochs")),
        }
    )
    options = saved.get("dataset_options", {})
    return TrainRun(saved["model"], saved["dataset"], data_dir or saved["data_dir"], options, saved["stem"], config)


def _resume_epochs(out: Path, saved: int, given: int | None) -> int:
    """A resumed run's epochs: its own, or ``given`` when larger (which extends it; see
    :func:`secateurs.train.train` for the learning-rate schedule then)."""
    if given is not None and given < saved:
        raise ConfigError(
            f"--epochs {given} is fewer than the {saved} epochs of the run in {str(out)!r}; a run can "
            f"be extended (--epochs above {saved}), not shortened"
        )
    return saved if given is None else given


def read_run(out: Path) -> dict[str, Any]:
    path = Path(out) / RUN_FILE
    if not path.is_file():
        raise ConfigError(f"{str(path)!r} does not exist: {str(out)!r} is not a secateurs training run directory")
    try:
        run = json.loads(path.read_text())
        missing = {"model", "dataset", "data_dir", "stem", "train"} - set(run)
    except (json.JSONDecodeError, TypeError) as e:
        raise ConfigError(f"{str(path)!r} is not valid JSON ({e}); it is not a secateurs run file") from e
    if missing:
        raise ConfigError(f"{str(path)!r} lacks {sorted(missing)}; it is not a secateurs run file")
    return run


# --- the command line -------------------------------------------------------------------


def train_flags() -> Flags:
    """One flag per :class:`~secateurs.train.TrainConfig` field; a field without a
    description here fails ``tests/test_cli_safety.py``."""
    from ..train import TrainConfig
    from ..train.schedule import SCHEDULES

    descriptions = {
        "epochs": "passes over the training set",
        "batch_size": "global batch size, split evenly over the processes under torchrun",
        "lr": "peak learning rate of SGD",
        "momentum": "SGD momentum",
        "nesterov": "Nesterov momentum (when momentum > 0)",
        "weight_decay": "L2 weight decay",
        "schedule": "learning-rate schedule, " + one_of(SCHEDULES),
        "warmup_epochs": "epochs of linear learning-rate warm-up; fractions allowed",
        "label_smoothing": "label smoothing of the cross-entropy, in [0, 1)",
        "seed": "seed of the initialisation, the data order and the augmentation",
        "augment": "random crops and flips of the training images",
        "amp": "mixed precision on CUDA; CPU runs stay in float32",
        "sync_bn": "batch-norm statistics over the global batch under torchrun",
        "eval_batch_size": "batch size of the test evaluation after each epoch",
        "device": "auto, cpu, cuda, cuda:1 ...",
        "progress": "a progress bar during each epoch",
        "max_steps_per_epoch": "cap on the optimizer steps per epoch, for smoke tests (default: none)",
        "num_workers": "DataLoader worker processes, for datasets decoded while streaming (in-memory ones need none)",
        "channels_last": "train in channels-last (NHWC) memory layout: faster convolutions on CPU (oneDNN) and on GPU "
        "under AMP",
        "bn_l1": "network slimming's sparsity penalty: adds BN_L1 * sum |gamma| of every BatchNorm to the loss, which "
        "gives bn-scale and probability channels to remove (default 0: off)",
    }
    return Flags(TrainConfig, descriptions, noun="training option")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model name, see `secateurs models` (required unless --resume)")
    add_dataset_args(p, default="none; required unless --resume")
    p.add_argument(
        "--stem",
        choices=STEMS,
        default="auto",
        help="the network's first layers: {" + ", ".join(STEMS) + "}; auto is cifar for images up to 64 px, "
        "imagenet above",
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help=f"run directory for {', '.join(TRAIN_FILES[:-1])} and {TRAIN_FILES[-1]}",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    add_overwrite_arg(p, "the four run files in --out if they exist (a new run, not --resume)")
    train_flags().add_to(p)


def run(args: argparse.Namespace) -> None:
    from ..train import dist_info

    train_command(
        args.out,
        resume=args.resume,
        model=args.model,
        dataset=args.dataset,
        data_dir=args.data_dir,
        stem=args.stem,
        overrides=train_flags().given(args),
        dataset_options=dict(args.dataset_options) or None,
        overwrite=args.overwrite,
    )
    if dist_info().is_main:
        print(f"model: {args.out / 'model.safetensors'}")


COMMAND = Command(
    "train",
    "train a model from scratch on a dataset",
    add_arguments,
    run,
    examples="""examples:
  secateurs train --model resnet20 --dataset fashion-mnist --epochs 30 --out runs/r20
  secateurs train --resume --out runs/r20        # continue after an interruption""",
)
