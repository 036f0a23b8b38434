"""``secateurs report``: rebuild one pruning run's report.md and figures from its files, or
compare several runs in one table and figure."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from ._args import add_overwrite_arg
from ._command import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="pruning run directories")
    p.add_argument(
        "--out",
        type=Path,
        help="folder for the comparison of several runs (comparison.md and its "
        "figure); required with two or more RUN_DIRs",
    )
    add_overwrite_arg(p, "comparison.md and its figure in --out")


def run(args: argparse.Namespace) -> None:
    from ..report import plots_unavailable, write_comparison, write_run_report

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


COMMAND = Command(
    "report",
    "rebuild a pruning run's report.md and figures, or compare several runs",
    add_arguments,
    run,
    examples="""examples:
  secateurs report runs/r20-pruned               # rebuild one run's report.md and figures
  secateurs report runs/r20-l1 runs/r20-fcs --out runs/compare""",
)
