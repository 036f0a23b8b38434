"""The ``secateurs`` command: a thin layer over the Python API.

Each sub-command is one entry in :data:`COMMANDS` (arguments + a function), so adding a
command touches one place. Errors raised on purpose (:class:`SecateursError`) and
refusals of the file system (:class:`OSError`: read-only, full, permission denied) print
one line naming the path and the cause and exit with status 2; anything else is a bug and
keeps its traceback. What a command may overwrite is decided in :mod:`secateurs.io.outdir`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._cli_args import (
    EXAMPLES,
    FROM_HELP,
    HelpFormatter,
    add_arch_args,
    add_dataclass_args,
    add_dataset_args,
    add_overwrite_arg,
    field_default,
    int_list,
    one_of,
    train_help,
)
from ._cli_prune import add_prune_args, prune_options
from .errors import ConfigError, SecateursError, describe_os_error


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    def deco(fn: Callable[[argparse.Namespace], int | None]):
        COMMANDS[name] = Command(help, add_arguments, fn)
        return fn

    return deco


def _arch(args: argparse.Namespace):
    from .io._factory import ArchSpec

    if args.arch is None:
        if args.arch_options:
            raise ConfigError("--arch-option needs --arch MODULE:FUNCTION")
        return None
    return ArchSpec(args.arch, dict(args.arch_options))


def _dataclass_overrides(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}


def _print(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data, indent=2) if getattr(args, "json", False) else text)


# --- train ------------------------------------------------------------------------------


def _train_args(p: argparse.ArgumentParser) -> None:
    from .train import TrainConfig

    p.add_argument("--model", help="model name, see `secateurs models` (required unless --resume)")
    add_dataset_args(p, default="none; required unless --resume")
    p.add_argument(
        "--stem",
        choices=["auto", "cifar", "imagenet"],
        default="auto",
        help="the network's first layers: {auto, cifar, imagenet}; auto is cifar for images up to "
        "64 px, imagenet above",
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="run directory for run.json, model.safetensors, state.safetensors and metrics.jsonl",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    add_overwrite_arg(p, "the four run files in --out if they exist (a new run, not --resume)")
    add_dataclass_args(p, TrainConfig, train_help())


@command("train", "train a model from scratch on a dataset", _train_args)
def _train(args: argparse.Namespace) -> None:
    from . import runs
    from .train import TrainConfig, dist_info

    runs.train_command(
        args.out,
        resume=args.resume,
        model=args.model,
        dataset=args.dataset,
        data_dir=args.data_dir,
        stem=args.stem,
        overrides=_dataclass_overrides(args, TrainConfig),
        dataset_options=dict(args.dataset_options) or None,
        overwrite=args.overwrite,
    )
    if dist_info().is_main:
        print(f"model: {args.out / 'model.safetensors'}")


# --- eval / measure / export ------------------------------------------------------------


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="ckpt", required=True, type=Path, help=FROM_HELP)
    add_arch_args(p)
    add_dataset_args(p)
    p.add_argument("--split", default="test", help="dataset split to evaluate: train or test")
    p.add_argument("--batch-size", type=int, default=512, help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


@command("eval", "top-1/top-5 accuracy and loss of a checkpoint on a dataset split", _eval_args)
def _eval(args: argparse.Namespace) -> None:
    from . import runs

    result = runs.evaluate_checkpoint(
        args.ckpt,
        args.dataset,
        args.data_dir,
        args.split,
        args.batch_size,
        args.device,
        dataset_options=dict(args.dataset_options),
        arch=_arch(args),
    )
    text = f"{args.ckpt}: {result['dataset']}/{result['split']} top1 {result['top1']:.2f}%"
    if "top5" in result:
        text += f" top5 {result['top5']:.2f}%"
    _print(args, result, text + f" loss {result['loss']:.4f} ({result['samples']} samples)")


def _measure_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="ckpt", type=Path, help=FROM_HELP + "; or give --compare A B")
    p.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("A", "B"),
        help="time two checkpoints interleaved (ABBA...) until the medians settle, and report the "
        "speed-up A/B with whether it can be trusted (--threads default: half the cores)",
    )
    p.add_argument("--budget", type=float, default=20.0, help="--compare: seconds to spend at most")
    add_arch_args(p)
    p.add_argument("--input-shape", type=int_list, help="C,H,W (default: from the checkpoint)")
    p.add_argument(
        "--batch-sizes", type=int_list, default=[1, 64], help="comma-separated batch sizes to time latency at"
    )
    p.add_argument("--repeats", type=int, default=30, help="timed forward passes per batch size")
    p.add_argument("--warmup", type=int, default=5, help="untimed forward passes before timing")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="where latency is timed: cpu, cuda, cuda:1 ...")
    p.add_argument("--no-latency", action="store_true", help="params and MACs only")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


@command("measure", "params, MACs and latency of a checkpoint", _measure_args)
def _measure(args: argparse.Namespace) -> None:
    from . import runs

    if args.compare:
        if args.ckpt is not None:
            raise ConfigError("give either --from CHECKPOINT or --compare A B, not both")
        c = runs.compare_checkpoints(
            *args.compare,
            args.input_shape,
            batch_sizes=tuple(args.batch_sizes),
            threads=args.threads,
            device=args.device,
            budget_s=args.budget,
            arch=_arch(args),
        )
        _print(
            args,
            {**c.to_dict(), "checkpoints": [str(p) for p in args.compare]},
            f"A: {args.compare[0]}\nB: {args.compare[1]}\n{c.summary()}",
        )
        return
    if args.ckpt is None:
        raise ConfigError("secateurs measure needs --from CHECKPOINT, or --compare A B")
    m = runs.measure_checkpoint(
        args.ckpt,
        args.input_shape,
        latency=not args.no_latency,
        batch_sizes=tuple(args.batch_sizes),
        warmup=args.warmup,
        repeats=args.repeats,
        device=args.device,
        threads=args.threads,
        arch=_arch(args),
    )
    _print(args, m.to_dict(), m.summary())


def _export_args(p: argparse.ArgumentParser) -> None:
    from .io.export import EXPORT_FORMATS

    p.add_argument("--from", dest="ckpt", required=True, type=Path, help=FROM_HELP)
    p.add_argument("--format", required=True, help="file format, " + one_of(EXPORT_FORMATS))
    add_arch_args(p)
    p.add_argument("--out", required=True, type=Path, help="the file to write (an existing one only with --overwrite)")
    add_overwrite_arg(p, "the --out file if it exists")
    p.add_argument("--input-shape", type=int_list, help="C,H,W (default: from the checkpoint)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version (onnx only)")
    p.add_argument(
        "--no-verify", action="store_true", help="skip comparing the ONNX model's output with PyTorch's in onnxruntime"
    )


@command("export", "export a checkpoint to ONNX or TorchScript", _export_args)
def _export(args: argparse.Namespace) -> None:
    from . import runs

    path, diff = runs.export_checkpoint(
        args.ckpt,
        args.format,
        args.out,
        args.input_shape,
        args.opset,
        verify=not args.no_verify,
        overwrite=args.overwrite,
        arch=_arch(args),
    )
    extra = f" (onnxruntime max abs diff vs PyTorch {diff:.2e})" if diff is not None else ""
    print(f"wrote {path}{extra}")


# --- prune / methods ----------------------------------------------------------------------


@command("prune", "prune a trained checkpoint to a MACs or params target, fine-tune, and report", add_prune_args)
def _prune(args: argparse.Namespace) -> None:
    from .io.outdir import claim
    from .pipeline import PruneConfig, load_recipe
    from .pipeline.command import (
        CONFIG_FILE,
        LOG_FILE,
        METRICS_FILE,
        MODEL_FILE,
        check_out,
        prune_command,
        resume_arguments,
    )
    from .pipeline.progress import PROGRESS_FILE
    from .report import report_files

    options = prune_options(args)
    _logging_to_stderr()
    if args.resume:
        if args.recipe:
            raise ConfigError("--resume continues a run with its own configuration; drop --recipe")
        run = resume_arguments(args.out, args.ckpt, options)
        result = prune_command(
            run["ckpt"],
            args.out,
            run["config"],
            run["dataset"],
            args.data_dir or run["data_dir"],
            run["dataset_options"],
            resume=True,
            arch=_arch(args) or run.get("arch"),
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
        claim(outputs, source=args.ckpt, overwrite=True, overwrite_flag=None)
        check_out(args.out, resume=False)
        claim(
            outputs,
            source=args.ckpt,
            overwrite_flag=None,
            other_way=" (or pass --resume, if it is an interrupted pruning run to continue)",
        )
        result = prune_command(
            args.ckpt, args.out, config, args.dataset, args.data_dir, dict(args.dataset_options), arch=_arch(args)
        )
    from .train import dist_info

    if dist_info().is_main:
        print(result.summary())
        print(f"pruned model: {args.out / 'model.safetensors'} (report.md, metrics.json and log.txt beside it)")


def _logging_to_stderr() -> None:
    import logging

    logger = logging.getLogger("secateurs")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


@command("methods", "list the pruning methods", lambda p: None)
def _methods(args: argparse.Namespace) -> None:
    from .methods import METHODS

    width = max(map(len, METHODS))
    print("\n".join(f"{name:<{width}}  {METHODS[name].summary}" for name in sorted(METHODS)))


# --- listings and demo --------------------------------------------------------------------


@command(
    "models",
    "list the model zoo",
    lambda p: p.add_argument(
        "pattern", nargs="?", default="*", help="shell-style pattern of the names to list, e.g. 'resnet*' (default: *)"
    ),
)
def _models(args: argparse.Namespace) -> None:
    from .models import list_models

    print("\n".join(list_models(args.pattern)))


@command("datasets", "list the datasets", lambda p: None)
def _datasets(args: argparse.Namespace) -> None:
    from .data import list_datasets

    print("\n".join(list_datasets()))


def _demo_args(p: argparse.ArgumentParser) -> None:
    from .demo import DemoConfig

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
        default=True,
        help="time the models before and after pruning (the speed-up columns)",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="start over: delete the files an earlier demo wrote in --out (and nothing else), baseline included",
    )


@command(
    "demo",
    "the product in five minutes: train a baseline on Fashion-MNIST, prune it with fcs and l1, compare",
    _demo_args,
)
def _demo(args: argparse.Namespace) -> None:
    from . import demo

    _logging_to_stderr()  # the pruning runs' progress
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


# --- report -------------------------------------------------------------------------------


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="pruning run directories")
    p.add_argument(
        "--out",
        type=Path,
        help="folder for the comparison of several runs (comparison.md and its "
        "figure); required with two or more RUN_DIRs",
    )
    add_overwrite_arg(p, "comparison.md and its figure in --out")


@command("report", "rebuild a pruning run's report.md and figures, or compare several runs", _report_args)
def _report(args: argparse.Namespace) -> None:
    from .report import plots_unavailable, write_comparison, write_run_report

    if len(args.run_dirs) == 1:
        if args.out is not None:
            raise ConfigError(
                "--out is for comparing two or more runs; one run's report is rebuilt in its own "
                f"directory ({args.run_dirs[0]}): drop --out, or give more RUN_DIRs"
            )
        print(f"wrote {write_run_report(args.run_dirs[0])}")
    else:
        if args.out is None:
            raise ConfigError(f"comparing {len(args.run_dirs)} runs needs --out DIR for comparison.md")
        print(f"wrote {write_comparison(args.run_dirs, args.out, overwrite=args.overwrite)}")
    missing = plots_unavailable()
    if missing:
        print(f"note: {missing}")


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="secateurs", description="Structured pruning of trained CNNs.")
    parser.add_argument("--version", action="version", version=f"secateurs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        cmd.add_arguments(
            sub.add_parser(
                name, help=cmd.help, description=cmd.help, epilog=EXAMPLES.get(name), formatter_class=HelpFormatter
            )
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command].run(args) or 0
    except SecateursError as e:
        message = str(e)
    except OSError as e:  # the file system refused (read-only, full, a file where a folder must be)
        message = describe_os_error(e)
    print(f"secateurs {args.command}: error: {' '.join(message.split())}", file=sys.stderr)  # one line, always
    return 2


if __name__ == "__main__":
    sys.exit(main())
