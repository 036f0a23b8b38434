"""What a sub-command is: its name, its flags, what it does, and its examples."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """``secateurs NAME``: ``add_arguments`` fills its parser, ``run`` does it (None or 0:
    success), ``examples`` end its ``--help`` (a command without any fails
    ``tests/test_cli_safety.py``)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]
    examples: str


def no_arguments(p: argparse.ArgumentParser) -> None:
    """For a command that takes no flags."""
