"""The ``secateurs`` command: a thin layer over the Python API.

Each sub-command is one entry in :data:`COMMANDS` (arguments + a function), so adding a
command touches one place. Errors raised on purpose (:class:`SecateursError`) print one
line and exit with status 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import ConfigError, SecateursError


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


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,64, got {text!r}") from None


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE such as image_size=64, got {text!r}")
    for parse in (int, float):
        try:
            return key, parse(value)
        except ValueError:
            pass
    return key, {"true": True, "false": False}.get(value.lower(), value)


def _add_dataset_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--dataset", required=required, help="dataset name (see `secateurs datasets`)")
    p.add_argument("--data-dir", help="folder holding the dataset files (default: the dataset's standard place)")
    p.add_argument("--dataset-option", dest="dataset_options", action="append", type=_key_value, default=[],
                   metavar="KEY=VALUE", help="a dataset keyword, e.g. image_size=64 (imagefolder) or "
                                             "num_samples=1024 (synthetic); repeatable")


def _add_dataclass_args(p: argparse.ArgumentParser, cls: type, skip: Sequence[str] = ()) -> None:
    """One ``--flag`` per dataclass field, typed from its default, so the CLI never drifts from the API."""
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None)
        else:
            typ = type(f.default) if f.default is not None else int
            p.add_argument(flag, dest=f.name, type=typ, default=None, help=f"default {f.default!r}")


def _dataclass_overrides(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if getattr(args, f.name, None) is not None}


def _print(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data, indent=2) if getattr(args, "json", False) else text)


# --- train ------------------------------------------------------------------------------

def _train_args(p: argparse.ArgumentParser) -> None:
    from .train import TrainConfig

    p.add_argument("--model", help="model name (see `secateurs models`)")
    _add_dataset_args(p)
    p.add_argument("--stem", choices=["auto", "cifar", "imagenet"], default="auto",
                   help="auto: cifar for images up to 64 px, imagenet above")
    p.add_argument("--out", required=True, type=Path, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    _add_dataclass_args(p, TrainConfig)


@command("train", "train a model from scratch on a dataset", _train_args)
def _train(args: argparse.Namespace) -> None:
    from . import runs
    from .train import TrainConfig

    runs.train_command(args.out, resume=args.resume, model=args.model, dataset=args.dataset,
                       data_dir=args.data_dir, stem=args.stem, overrides=_dataclass_overrides(args, TrainConfig),
                       dataset_options=dict(args.dataset_options) or None)


# --- eval / measure / export ------------------------------------------------------------

def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="ckpt", required=True, type=Path, help="model checkpoint (.safetensors)")
    _add_dataset_args(p)
    p.add_argument("--split", default="test")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


@command("eval", "top-1/top-5 accuracy and loss of a checkpoint on a dataset split", _eval_args)
def _eval(args: argparse.Namespace) -> None:
    from . import runs

    result = runs.evaluate_checkpoint(args.ckpt, args.dataset, args.data_dir, args.split, args.batch_size, args.device,
                                      dataset_options=dict(args.dataset_options))
    text = f"{args.ckpt}: {result['dataset']}/{result['split']} top1 {result['top1']:.2f}%"
    if "top5" in result:
        text += f" top5 {result['top5']:.2f}%"
    _print(args, result, text + f" loss {result['loss']:.4f} ({result['samples']} samples)")


def _measure_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="ckpt", required=True, type=Path, help="model checkpoint (.safetensors)")
    p.add_argument("--input-shape", type=_int_list, help="C,H,W (default: from the checkpoint)")
    p.add_argument("--batch-sizes", type=_int_list, default=[1, 64])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-latency", action="store_true", help="params and MACs only")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


@command("measure", "params, MACs and latency of a checkpoint", _measure_args)
def _measure(args: argparse.Namespace) -> None:
    from . import runs

    m = runs.measure_checkpoint(args.ckpt, args.input_shape, latency=not args.no_latency,
                                batch_sizes=tuple(args.batch_sizes), warmup=args.warmup, repeats=args.repeats,
                                device=args.device, threads=args.threads)
    _print(args, m.to_dict(), m.summary())


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="ckpt", required=True, type=Path, help="model checkpoint (.safetensors)")
    p.add_argument("--format", required=True, help="onnx or torchscript")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--input-shape", type=_int_list, help="C,H,W (default: from the checkpoint)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime comparison")


@command("export", "export a checkpoint to ONNX or TorchScript", _export_args)
def _export(args: argparse.Namespace) -> None:
    from . import runs

    path, diff = runs.export_checkpoint(args.ckpt, args.format, args.out, args.input_shape, args.opset,
                                        verify=not args.no_verify)
    extra = f" (onnxruntime max abs diff vs PyTorch {diff:.2e})" if diff is not None else ""
    print(f"wrote {path}{extra}")


# --- prune / methods ----------------------------------------------------------------------

def _prune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="ckpt", type=Path, help="trained model checkpoint (.safetensors)")
    p.add_argument("--out", required=True, type=Path, help="run directory for the pruned model and its report")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out where it stopped")
    p.add_argument("--recipe", type=Path, help="YAML file of pruning options; flags given here override it")
    p.add_argument("--method", help="pruning method (see `secateurs methods`; default l1-capped)")
    _add_dataset_args(p)
    target = p.add_mutually_exclusive_group()
    target.add_argument("--macs-reduction", type=float, help="fraction of MACs to remove, e.g. 0.5")
    target.add_argument("--params-reduction", type=float, help="fraction of parameters to remove")
    p.add_argument("--scope", choices=["global", "layer"], help="one ranking over all layers, or the same ratio "
                                                                  "in every layer (default global)")
    p.add_argument("--rounds", type=int, help="pruning rounds, each followed by fine-tuning (default: the method's)")
    p.add_argument("--min-keep-fraction", type=float, help="every layer keeps at least this share (default 0.1)")
    p.add_argument("--finetune", help="fine-tuning mode: tft (cross-entropy), kd (distillation from the frozen "
                                      "unpruned network), mlft (mutual learning with a peer) or none (default: the "
                                      "method's; tft, none for probability)")
    p.add_argument("--finetune-option", dest="finetune_options", action="append", type=_key_value, default=[],
                   metavar="KEY=VALUE", help="an option of the fine-tuning mode: temperature, weight (kd, mlft); "
                                             "peer=unpruned|pruned, peer_noise (mlft) (repeatable)")
    p.add_argument("--tau", type=float, help="probability: prune where P(BN output <= 0) >= tau (default 0.99); "
                                             "with a reduction target, tau is solved instead")
    p.add_argument("--finetune-epochs", type=int, help="fine-tuning epochs in total, over all rounds (default 3)")
    p.add_argument("--finetune-lr", type=float, help="fine-tuning peak learning rate (default 0.01)")
    p.add_argument("--finetune-batch-size", type=int, help="fine-tuning global batch size (default 128)")
    p.add_argument("--finetune-max-steps-per-epoch", type=int, help="cap on fine-tuning steps per epoch")
    p.add_argument("--method-option", dest="method_options", action="append", type=_key_value, default=[],
                   metavar="KEY=VALUE", help="an option of the method, e.g. alpha=0.7 (repeatable)")
    p.add_argument("--calib-samples", type=int, help="calibration samples for data-driven criteria (default 256)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 ... (default auto)")
    p.add_argument("--latency", action=argparse.BooleanOptionalAction, default=None,
                   help="measure latency before and after (default on)")


def _prune_options(args: argparse.Namespace) -> dict[str, Any]:
    options = {k: getattr(args, k) for k in ("method", "macs_reduction", "params_reduction", "scope", "rounds",
                                             "min_keep_fraction", "finetune", "finetune_epochs", "calib_samples",
                                             "seed", "device", "latency") if getattr(args, k) is not None}
    train = {k: getattr(args, "finetune_" + k) for k in ("lr", "batch_size", "max_steps_per_epoch")
             if getattr(args, "finetune_" + k) is not None}
    if train:
        options["finetune_train"] = train
    if args.method_options:
        options["method_options"] = dict(args.method_options)
    if args.finetune_options:
        options["finetune_options"] = dict(args.finetune_options)
    if args.tau is not None:
        options.setdefault("method_options", {})["tau"] = args.tau
    return options


@command("prune", "prune a trained checkpoint to a MACs or params target, fine-tune, and report", _prune_args)
def _prune(args: argparse.Namespace) -> None:
    from .pipeline import PruneConfig, load_recipe
    from .pipeline.command import prune_command

    from .pipeline.command import resume_arguments

    options = _prune_options(args)
    _logging_to_stderr()
    if args.resume:
        if args.recipe:
            raise ConfigError("--resume continues a run with its own configuration; drop --recipe")
        run = resume_arguments(args.out, args.ckpt, options)
        result = prune_command(run["ckpt"], args.out, run["config"], run["dataset"], args.data_dir or run["data_dir"],
                               run["dataset_options"], resume=True)
    else:
        if args.ckpt is None:
            raise ConfigError("secateurs prune needs --from CHECKPOINT (or --resume --out RUN_DIR)")
        config = load_recipe(args.recipe, **options) if args.recipe else PruneConfig.from_dict(options)
        result = prune_command(args.ckpt, args.out, config, args.dataset, args.data_dir, dict(args.dataset_options))
    from .train import dist_info

    if dist_info().is_main:
        print(result.summary())
        print(f"wrote {args.out}")


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

@command("models", "list the model zoo", lambda p: p.add_argument("pattern", nargs="?", default="*"))
def _models(args: argparse.Namespace) -> None:
    from .models import list_models

    print("\n".join(list_models(args.pattern)))


@command("datasets", "list the datasets", lambda p: None)
def _datasets(args: argparse.Namespace) -> None:
    from .data import list_datasets

    print("\n".join(list_datasets()))


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--data-dir")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-steps-per-epoch", type=int, default=None)
    p.add_argument("--fresh", action="store_true", help="delete --out first instead of reusing a finished run")


@command("demo", "the embedded default: train, evaluate and measure a baseline on Fashion-MNIST", _demo_args)
def _demo(args: argparse.Namespace) -> None:
    from . import demo

    demo.run(args.out, model=args.model, epochs=args.epochs, data_dir=args.data_dir,
             max_steps_per_epoch=args.max_steps_per_epoch, fresh=args.fresh)


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="secateurs", description="Structured pruning of trained CNNs.")
    parser.add_argument("--version", action="version", version=f"secateurs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        cmd.add_arguments(sub.add_parser(name, help=cmd.help, description=cmd.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command].run(args) or 0
    except SecateursError as e:
        message = " ".join(str(e).split())  # one line, whatever the message was built from
        print(f"secateurs {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
