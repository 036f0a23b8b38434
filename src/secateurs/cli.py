"""The ``secateurs`` command: one parser over the commands in :mod:`secateurs.commands`.

Each sub-command is one entry in :data:`COMMANDS` (its flags, its function, its examples),
so adding a command touches its module and one line here. Errors raised on purpose
(:class:`SecateursError`) and refusals of the file system (:class:`OSError`: read-only,
full, permission denied) print one line naming the path and the cause and exit with
status 2; anything else is a bug and keeps its traceback. What a command may overwrite is
decided in :mod:`secateurs.io.outdir`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .commands import Command, demo, evaluate, export, listings, measure, prune, report, train
from .commands._args import HelpFormatter
from .errors import SecateursError, describe_os_error

#: Every sub-command, in the order ``secateurs --help`` lists them.
COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        train.COMMAND,
        evaluate.COMMAND,
        measure.COMMAND,
        export.COMMAND,
        prune.COMMAND,
        *listings.COMMANDS,
        demo.COMMAND,
        report.COMMAND,
    )
}


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="secateurs", description="Structured pruning of trained CNNs.")
    parser.add_argument("--version", action="version", version=f"secateurs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        cmd.add_arguments(
            sub.add_parser(
                name, help=cmd.help, description=cmd.help, epilog=cmd.examples, formatter_class=HelpFormatter
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
