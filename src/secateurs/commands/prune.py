"""``secateurs prune``: its flags, generated from the config dataclasses, and the command.

Every pruning flag is a field: of :class:`~secateurs.pipeline.PruneConfig`; of
:class:`~secateurs.train.TrainConfig` for ``--finetune-*`` (into ``finetune_train``, with the
fine-tuning defaults); of the probability method's options for ``--tau``. Defaults and
choices come from those classes and the registries; the tables here hold only the words.
What the command does is :mod:`secateurs.commands.prune_run`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ._args import FROM_HELP, add_arch_args, add_dataset_args, arch_spec, logging_to_stderr, one_of
from ._command import Command
from ._flags import Flags

#: PruneConfig fields without a flag: switches for callers that prune one checkpoint many
#: times (a benchmark), set in Python or a recipe.
NOT_FLAGS = ("finetune_train", "eval_each_epoch", "evaluate_before")
#: The TrainConfig fields fine-tuning exposes as ``--finetune-<field>``.
FINETUNE_TRAIN_FLAGS = ("lr", "batch_size", "max_steps_per_epoch")


def _by_method(attr: str, shown: Callable[[Any], str], sep: str) -> str:
    """``tft, none for probability``: the value of ``attr`` most methods have, then each
    other value with its methods."""
    from ..methods import METHODS

    by_value: dict[Any, list[str]] = {}
    for name in sorted(METHODS):
        by_value.setdefault(getattr(METHODS[name], attr), []).append(name)
    usual = max(by_value, key=lambda v: len(by_value[v]))
    return sep.join([shown(usual), *(f"{shown(v)} for {', '.join(n)}" for v, n in by_value.items() if v != usual)])


def _finetune_options() -> str:
    """``temperature, weight (kd, mlft); peer, ... (mlft)``: each fine-tuning mode's options."""
    import dataclasses

    from ..pipeline.finetune import FINETUNE_MODES

    by_fields: dict[str, list[str]] = {}
    for mode in FINETUNE_MODES.values():
        for f in dataclasses.fields(mode.options):
            by_fields.setdefault(f.name, []).append(mode.name)
    by_modes: dict[tuple[str, ...], list[str]] = {}
    for name, modes in by_fields.items():
        by_modes.setdefault(tuple(modes), []).append(name)
    return "; ".join(f"{', '.join(names)} ({', '.join(modes)})" for modes, names in by_modes.items())


def prune_flags() -> tuple[Flags, Flags, Flags]:
    """The flags of the pruning options, the fine-tuning training options and ``--tau``."""
    from ..methods import METHODS
    from ..methods.probability import DEFAULT_TAU, ProbabilityOptions
    from ..pipeline import PruneConfig
    from ..pipeline.config import FINETUNE_TRAIN_DEFAULTS
    from ..pipeline.finetune import FINETUNE_MODES
    from ..pipeline.recalibration import DEFAULT_BN_RECALIBRATION
    from ..select.budget import SCOPES
    from ..train import TrainConfig

    bn_default = _by_method(
        "recalibrate_by_default", lambda on: f"{DEFAULT_BN_RECALIBRATION} with a training set" if on else "off", "; "
    )
    config = Flags(
        PruneConfig,
        {
            "method": f"pruning method, {one_of(METHODS)}; see `secateurs methods`",
            "macs_reduction": "fraction of MACs to remove, e.g. 0.5 (this or --params-reduction is required, "
            "except for a method with its own threshold)",
            "params_reduction": "fraction of parameters to remove (default: none)",
            "scope": "global: one ranking over all layers; layer: the same ratio in every layer",
            "rounds": "pruning rounds, each followed by fine-tuning (default: the method's)",
            "min_keep_fraction": "every layer keeps at least this share",
            "round_to": "every pruned layer keeps a width that is a multiple of N, e.g. 8 for faster kernels",
            "finetune": f"fine-tuning mode, {one_of(FINETUNE_MODES)}: tft (cross-entropy), kd (distillation from "
            "the frozen unpruned network), mlft (mutual learning with a peer) (default: the method's; "
            f"{_by_method('default_finetune', str, ', ')})",
            # 3: PruneConfig.schedule's total when finetune_epochs is None (a literal there).
            "finetune_epochs": "fine-tuning epochs in total, over all rounds (default 3)",
            "finetune_options": f"an option of the fine-tuning mode: {_finetune_options()}",
            "method_options": "an option of the method, e.g. alpha=0.7",
            "calib_samples": "calibration samples for data-driven criteria",
            "bn_recalibration": "re-estimate BN statistics on N training batches of 128 after every cut; 0: off "
            f"(default {bn_default})",
            "seed": "seed of the calibration draw and fine-tuning",
            "device": "auto, cpu, cuda, cuda:1 ...",
            "latency": "measure latency before and after",
        },
        noun="pruning option",
        skip=NOT_FLAGS,
        choices={"scope": SCOPES},
        metavars={"round_to": "N", "bn_recalibration": "N"},
        exclusive=[("macs_reduction", "params_reduction")],
    )
    finetune_train = Flags(
        TrainConfig,
        {
            "lr": "fine-tuning peak learning rate",
            "batch_size": "fine-tuning global batch size",
            "max_steps_per_epoch": "cap on fine-tuning steps per epoch, for smoke tests (default: none)",
        },
        noun="fine-tuning option",
        fields=FINETUNE_TRAIN_FLAGS,
        prefix="finetune",
        defaults=FINETUNE_TRAIN_DEFAULTS,
    )
    tau = Flags(
        ProbabilityOptions,
        {
            "tau": f"probability: prune where P(BN output <= 0) >= tau (default: {DEFAULT_TAU}); with a "
            "reduction target, tau is solved instead"
        },
        noun="probability option",
        fields=("tau",),
    )
    return config, finetune_train, tau


def add_arguments(p: argparse.ArgumentParser) -> None:
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
    add_dataset_args(p)
    for flags in prune_flags():
        flags.add_to(p)


def prune_options(args: argparse.Namespace) -> dict[str, Any]:
    """The flags the user gave, as :class:`~secateurs.pipeline.PruneConfig` keywords."""
    config, finetune_train, tau = prune_flags()
    options = config.given(args)
    if train := finetune_train.given(args):
        options["finetune_train"] = train
    if threshold := tau.given(args):  # wins over a --method-option of the same name
        options["method_options"] = {**options.get("method_options", {}), **threshold}
    return options


def run(args: argparse.Namespace) -> None:
    from ..io.outdir import claim
    from ..pipeline import PruneConfig, load_recipe
    from ..pipeline.progress import PROGRESS_FILE
    from ..report import report_files
    from ..train import dist_info
    from .prune_run import (
        CONFIG_FILE,
        LOG_FILE,
        METRICS_FILE,
        MODEL_FILE,
        check_out,
        prune_command,
        resume_arguments,
    )

    options = prune_options(args)
    logging_to_stderr()
    if args.resume:
        if args.recipe:
            raise ConfigError("--resume continues a run with its own configuration; drop --recipe")
        saved = resume_arguments(args.out, args.ckpt, options)
        result = prune_command(
            saved["ckpt"],
            args.out,
            saved["config"],
            saved["dataset"],
            args.data_dir or saved["data_dir"],
            saved["dataset_options"],
            resume=True,
            arch=arch_spec(args) or saved.get("arch"),
        )
    else:
        if args.ckpt is None:
            raise ConfigError("secateurs prune needs --from CHECKPOINT (or --resume --out RUN_DIR)")
        config = load_recipe(args.recipe, **options) if args.recipe else PruneConfig.from_dict(options)
        # No --overwrite: a pruning run is a folder of per-round training runs, and half of
        # an old one beside a new one would read as a single run.
        outputs = [args.out / n for n in (MODEL_FILE, CONFIG_FILE, METRICS_FILE, LOG_FILE, PROGRESS_FILE)]
        outputs += [args.out / n for n in report_files()]  # report.md and its figures
        # The checks in order of what the user most needs to hear: --out would replace the
        # --from model; --out holds an earlier pruning run (offer --resume); any other file.
        # Under torchrun rank 0 alone judges the disk: a rank starting late would find the
        # files rank 0 has begun to write (a refusal on rank 0 ends the whole job).
        if dist_info().is_main:
            claim(outputs, source=args.ckpt, overwrite=True, overwrite_flag=None)
            check_out(args.out, resume=False)
            claim(
                outputs,
                source=args.ckpt,
                overwrite_flag=None,
                other_way=" (or pass --resume, if it is an interrupted pruning run to continue)",
            )
        result = prune_command(
            args.ckpt, args.out, config, args.dataset, args.data_dir, dict(args.dataset_options), arch=arch_spec(args)
        )
    if dist_info().is_main:
        print(result.summary())
        print(f"pruned model: {args.out / MODEL_FILE} (report.md, metrics.json and log.txt beside it)")


COMMAND = Command(
    "prune",
    "prune a trained checkpoint to a MACs or params target, fine-tune, and report",
    add_arguments,
    run,
    examples="""examples:
  secateurs prune --from runs/r20 --method l1-capped --macs-reduction 0.5 --out runs/r20-pruned
  secateurs prune --resume --out runs/r20-pruned  # continue an interrupted run""",
)
