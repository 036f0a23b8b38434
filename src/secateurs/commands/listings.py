"""``secateurs methods``, ``models`` and ``datasets``: what the registries hold."""

from __future__ import annotations

import argparse

from ._command import Command, no_arguments


def _methods(args: argparse.Namespace) -> None:
    from ..methods import METHODS

    width = max(map(len, METHODS))
    print("\n".join(f"{name:<{width}}  {METHODS[name].summary}" for name in sorted(METHODS)))


def _models_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "pattern", nargs="?", default="*", help="shell-style pattern of the names to list, e.g. 'resnet*' (default: *)"
    )


def _models(args: argparse.Namespace) -> None:
    from ..models import list_models

    print("\n".join(list_models(args.pattern)))


def _datasets(args: argparse.Namespace) -> None:
    from ..data import list_datasets

    print("\n".join(list_datasets()))


COMMANDS = (
    Command("methods", "list the pruning methods", no_arguments, _methods, "examples:\n  secateurs methods"),
    Command("models", "list the model zoo", _models_args, _models, "examples:\n  secateurs models 'resnet*'"),
    Command("datasets", "list the datasets", no_arguments, _datasets, "examples:\n  secateurs datasets"),
)
