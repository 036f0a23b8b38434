"""The flags of ``secateurs prune`` and their translation into pruning options.

Defaults in the help are read from :class:`~secateurs.pipeline.PruneConfig`, the fine-tuning
defaults and the registries, never copied by hand; the flags themselves default to None so
that a recipe file or a resumed run's saved values hold where the user gave no flag.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._cli_args import FROM_HELP, add_arch_args, add_dataset_args, field_default, key_value, one_of, show


def add_prune_args(p: argparse.ArgumentParser) -> None:
    from .methods import METHODS
    from .methods.probability import DEFAULT_TAU
    from .pipeline import PruneConfig
    from .pipeline.config import FINETUNE_TRAIN_DEFAULTS
    from .pipeline.finetune import FINETUNE_MODES
    from .pipeline.recalibration import DEFAULT_BN_RECALIBRATION
    from .train import TrainConfig

    def default(name: str) -> str:
        return str(field_default(PruneConfig, name))

    p.add_argument("--from", dest="ckpt", type=Path, help=FROM_HELP + " (required unless --resume)")
    add_arch_args(p)
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="new run directory for the pruned model and its report; files already there are never replaced",
    )
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out where it stopped")
    p.add_argument("--recipe", type=Path, help="YAML file of pruning options; flags given here override it")
    p.add_argument(
        "--method", help=f"pruning method, {one_of(METHODS)}; see `secateurs methods` (default: {default('method')})"
    )
    add_dataset_args(p)
    target = p.add_mutually_exclusive_group()
    target.add_argument(
        "--macs-reduction",
        type=float,
        help="fraction of MACs to remove, e.g. 0.5 (this or --params-reduction is required, "
        "except for a method with its own threshold)",
    )
    target.add_argument("--params-reduction", type=float, help="fraction of parameters to remove (default: none)")
    p.add_argument(
        "--scope",
        choices=["global", "layer"],
        help=f"global: one ranking over all layers; layer: the same ratio in every layer (default: {default('scope')})",
    )
    p.add_argument("--rounds", type=int, help="pruning rounds, each followed by fine-tuning (default: the method's)")
    p.add_argument(
        "--round-to",
        type=int,
        metavar="N",
        help="every pruned layer keeps a width that is a multiple of N, e.g. 8 for faster kernels "
        f"(default: {default('round_to')})",
    )
    p.add_argument(
        "--min-keep-fraction",
        type=float,
        help=f"every layer keeps at least this share (default: {default('min_keep_fraction')})",
    )
    p.add_argument(
        "--finetune",
        help=f"fine-tuning mode, {one_of(FINETUNE_MODES)}: tft (cross-entropy), kd "
        "(distillation from the frozen unpruned network), mlft (mutual learning with a "
        "peer) (default: the method's; tft, none for probability)",
    )
    p.add_argument(
        "--finetune-option",
        dest="finetune_options",
        action="append",
        type=key_value,
        default=[],
        metavar="KEY=VALUE",
        help="an option of the fine-tuning mode: temperature, weight (kd, mlft); "
        "peer=unpruned|pruned, peer_noise (mlft); repeatable (default: none)",
    )
    p.add_argument(
        "--tau",
        type=float,
        help=f"probability: prune where P(BN output <= 0) >= tau (default: "
        f"{DEFAULT_TAU}); with a reduction target, tau is solved instead",
    )
    p.add_argument("--finetune-epochs", type=int, help="fine-tuning epochs in total, over all rounds (default 3)")
    train = {**{f: field_default(TrainConfig, f) for f in ("lr", "batch_size")}, **FINETUNE_TRAIN_DEFAULTS}
    p.add_argument("--finetune-lr", type=float, help=f"fine-tuning peak learning rate (default: {train['lr']})")
    p.add_argument(
        "--finetune-batch-size", type=int, help=f"fine-tuning global batch size (default: {train['batch_size']})"
    )
    p.add_argument(
        "--finetune-max-steps-per-epoch",
        type=int,
        help="cap on fine-tuning steps per epoch, for smoke tests (default: none)",
    )
    p.add_argument(
        "--method-option",
        dest="method_options",
        action="append",
        type=key_value,
        default=[],
        metavar="KEY=VALUE",
        help="an option of the method, e.g. alpha=0.7; repeatable (default: none)",
    )
    p.add_argument(
        "--calib-samples",
        type=int,
        help=f"calibration samples for data-driven criteria (default: {default('calib_samples')})",
    )
    p.add_argument(
        "--bn-recalibration",
        type=int,
        metavar="N",
        help="re-estimate BN statistics on N training batches of 128 after every cut; 0: off (default "
        f"{DEFAULT_BN_RECALIBRATION} with a training set; off for probability)",
    )
    p.add_argument(
        "--seed", type=int, help=f"seed of the calibration draw and fine-tuning (default: {default('seed')})"
    )
    p.add_argument("--device", help=f"auto, cpu, cuda, cuda:1 ... (default: {default('device')})")
    p.add_argument(
        "--latency",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"measure latency before and after (default: {show(field_default(PruneConfig, 'latency'))})",
    )


def prune_options(args: argparse.Namespace) -> dict[str, Any]:
    """The flags the user gave, as :class:`~secateurs.pipeline.PruneConfig` keywords."""
    options = {
        k: getattr(args, k)
        for k in (
            "method",
            "macs_reduction",
            "params_reduction",
            "scope",
            "rounds",
            "round_to",
            "min_keep_fraction",
            "finetune",
            "finetune_epochs",
            "calib_samples",
            "bn_recalibration",
            "seed",
            "device",
            "latency",
        )
        if getattr(args, k) is not None
    }
    train = {
        k: getattr(args, "finetune_" + k)
        for k in ("lr", "batch_size", "max_steps_per_epoch")
        if getattr(args, "finetune_" + k) is not None
    }
    if train:
        options["finetune_train"] = train
    if args.method_options:
        options["method_options"] = dict(args.method_options)
    if args.finetune_options:
        options["finetune_options"] = dict(args.finetune_options)
    if args.tau is not None:
        options.setdefault("method_options", {})["tau"] = args.tau
    return options
