"""Argument plumbing of the ``secateurs`` command: value parsers, the help format, the
dataclass-generated flags and each command's examples.

Kept apart from :mod:`secateurs.cli` so that the commands there read as what they do.
Defaults shown in ``--help`` are generated (from argparse defaults and from the config
dataclasses), never copied by hand, so the help cannot drift from the code.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any


def int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,64, got {text!r}") from None


def key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE such as image_size=64, got {text!r}")
    for parse in (int, float):
        try:
            return key, parse(value)
        except ValueError:
            pass
    return key, {"true": True, "false": False}.get(value.lower(), value)


def show(value: Any) -> str:
    """A default as the user would type it: ``1,64`` for lists, ``on``/``off`` for switches."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def one_of(names: Iterable[str]) -> str:
    """``one of: a, b, c``, for choices that live in a registry (checked, with close matches
    offered, where the value is used rather than by argparse)."""
    return "one of: " + ", ".join(sorted(names))


def field_default(cls: type, name: str) -> Any:
    """The default of dataclass field ``name``, for help text that must not repeat it by hand."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default after its help unless the help already states one, and
    keeps the examples' line breaks.

    Switches that are off by default and options whose default is None (meaning "decided
    elsewhere", which the help then says) show nothing.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        # BooleanOptionalAction appends its own "(default: True)"; shown here as on/off instead.
        text = (action.help or "").replace(" (default: %(default)s)", "")
        default = action.default
        if (
            not action.option_strings
            or default in (None, argparse.SUPPRESS)
            or "default" in text
            or (action.nargs == 0 and default is False)
        ):
            return text
        return f"{text} (default: {show(default).replace('%', '%%')})"


def train_help() -> dict[str, str]:
    """One description per :class:`~secateurs.train.TrainConfig` field; a field without one
    fails ``tests/test_cli_safety.py``."""
    from .train.schedule import SCHEDULES

    return {
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
    }


def add_dataclass_args(
    p: argparse.ArgumentParser, cls: type, descriptions: dict[str, str], skip: Sequence[str] = ()
) -> None:
    """One ``--flag`` per dataclass field, typed from its default and described by
    ``descriptions[field]`` with that default appended, so the CLI never drifts from the API.
    argparse's default stays None: only flags the user gives override the dataclass (and a
    resumed run's saved values)."""
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        text = descriptions.get(f.name, f"training option {f.name}")  # the test flags a missing description
        if f.default is not None:
            text += f" (default: {show(f.default)})"
        if isinstance(f.default, bool):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            typ = type(f.default) if f.default is not None else int
            p.add_argument(flag, dest=f.name, type=typ, default=None, help=text)


def add_dataset_args(p: argparse.ArgumentParser, default: str = "the checkpoint's") -> None:
    from .data import list_datasets

    p.add_argument("--dataset", help=f"dataset name, {one_of(list_datasets())} (default: {default})")
    p.add_argument("--data-dir", help="folder holding the dataset files (default: the dataset's standard place)")
    p.add_argument(
        "--dataset-option",
        dest="dataset_options",
        action="append",
        type=key_value,
        default=[],
        metavar="KEY=VALUE",
        help="a dataset keyword, e.g. image_size=64 (imagefolder) or "
        "num_samples=1024 (synthetic); repeatable (default: none)",
    )


def add_arch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--arch",
        metavar="MODULE:FUNCTION",
        help="the factory of a model not in the zoo (torchvision.models:resnet18, or mymodels:build_net "
        "from a mymodels.py in the current folder or on PYTHONPATH); it builds the unpruned network, "
        "and the checkpoint's pruned layer shapes and weights are applied to it",
    )
    p.add_argument(
        "--arch-option",
        dest="arch_options",
        action="append",
        type=key_value,
        default=[],
        metavar="KEY=VALUE",
        help="a keyword argument of the --arch factory, e.g. num_classes=10; repeatable (default: none)",
    )


#: --from of every command that reads a model.
FROM_HELP = (
    "model checkpoint: a .safetensors file written by secateurs, or a train or prune run directory "
    "(its model.safetensors)"
)


def add_overwrite_arg(p: argparse.ArgumentParser, what: str) -> None:
    """``--overwrite``: the user's consent to replace exactly the outputs ``what`` names."""
    p.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace {what}; nothing else is touched, and a --from checkpoint never",
    )


#: Each command's examples, shown at the end of its --help. A command without any fails
#: ``tests/test_cli_safety.py``.
EXAMPLES: dict[str, str] = {
    "train": """examples:
  secateurs train --model resnet20 --dataset fashion-mnist --epochs 30 --out runs/r20
  secateurs train --resume --out runs/r20        # continue after an interruption""",
    "eval": """examples:
  secateurs eval --from runs/r20                 # a run directory or its model.safetensors
  secateurs eval --from runs/r20/model.safetensors --split train --json""",
    "measure": """examples:
  secateurs measure --from runs/r20 --threads 1
  secateurs measure --from runs/r20 --no-latency --json""",
    "export": """examples:
  secateurs export --from runs/r20-pruned --format onnx --out r20.onnx
  secateurs export --from runs/r20 --format torchscript --out r20.pt --overwrite""",
    "prune": """examples:
  secateurs prune --from runs/r20 --method l1-capped --macs-reduction 0.5 --out runs/r20-pruned
  secateurs prune --resume --out runs/r20-pruned  # continue an interrupted run""",
    "methods": """examples:
  secateurs methods""",
    "models": """examples:
  secateurs models 'resnet*'""",
    "datasets": """examples:
  secateurs datasets""",
    "report": """examples:
  secateurs report runs/r20-pruned               # rebuild one run's report.md and figures
  secateurs report runs/r20-l1 runs/r20-fcs --out runs/compare""",
    "demo": """examples:
  secateurs demo                                 # baseline, fcs and l1 at 50% MACs, comparison in runs/demo
  secateurs demo --method l1-capped --out runs/demo-capped
  secateurs demo --fresh                         # train the baseline again too""",
}
