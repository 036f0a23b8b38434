"""Argument plumbing shared by the commands: value parsers, the help format, the flags
several commands take, and reading them back (``--arch`` into an :class:`ArchSpec`).

Defaults shown in ``--help`` are generated (from argparse defaults here, and from the config
dataclasses in :mod:`._flags`), never copied by hand, so the help cannot drift from the code.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Iterable
from typing import Any

from ..errors import ConfigError


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


#: --from of every command that reads a model.
FROM_HELP = (
    "model checkpoint: a .safetensors file written by secateurs, or a train or prune run directory "
    "(its model.safetensors)"
)


def add_options_arg(p: argparse.ArgumentParser, flag: str, dest: str, help: str) -> None:
    """A repeatable ``--flag KEY=VALUE``, collected as pairs into ``dest``."""
    p.add_argument(
        flag,
        dest=dest,
        action="append",
        type=key_value,
        default=[],
        metavar="KEY=VALUE",
        help=f"{help}; repeatable (default: none)",
    )


def add_dataset_args(p: argparse.ArgumentParser, default: str = "the checkpoint's") -> None:
    from ..data import list_datasets

    p.add_argument("--dataset", help=f"dataset name, {one_of(list_datasets())} (default: {default})")
    p.add_argument("--data-dir", help="folder holding the dataset files (default: the dataset's standard place)")
    add_options_arg(
        p,
        "--dataset-option",
        "dataset_options",
        "a dataset keyword, e.g. image_size=64 (imagefolder) or num_samples=1024 (synthetic)",
    )


def add_arch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--arch",
        metavar="MODULE:FUNCTION",
        help="the factory of a model not in the zoo (torchvision.models:resnet18, or mymodels:build_net "
        "from a mymodels.py in the current folder or on PYTHONPATH); it builds the unpruned network, "
        "and the checkpoint's pruned layer shapes and weights are applied to it",
    )
    add_options_arg(p, "--arch-option", "arch_options", "a keyword argument of the --arch factory, e.g. num_classes=10")


def add_overwrite_arg(p: argparse.ArgumentParser, what: str) -> None:
    """``--overwrite``: the user's consent to replace exactly the outputs ``what`` names."""
    p.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace {what}; nothing else is touched, and a --from checkpoint never",
    )


def add_input_shape_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-shape", type=int_list, help="C,H,W (default: from the checkpoint)")


def add_json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def arch_spec(args: argparse.Namespace):
    """``--arch``/``--arch-option`` as an :class:`~secateurs.io._factory.ArchSpec`; None for a zoo model."""
    from ..io._factory import ArchSpec

    if args.arch is None:
        if args.arch_options:
            raise ConfigError("--arch-option needs --arch MODULE:FUNCTION")
        return None
    return ArchSpec(args.arch, dict(args.arch_options))


def print_result(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    """``data`` as JSON with ``--json``, else the one-line ``text``."""
    print(json.dumps(data, indent=2) if getattr(args, "json", False) else text)


class _CurrentStderr(logging.StreamHandler):
    """A stream handler on ``sys.stderr`` as it is when a line is logged, not when the handler
    was made: in one process that runs several commands (tests, a notebook) a later command
    whose stderr was redirected still gets its lines."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the property wins
        pass


def logging_to_stderr() -> None:
    """The library's progress lines (logger ``secateurs``) on stderr, once."""
    logger = logging.getLogger("secateurs")
    if not logger.handlers:
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
