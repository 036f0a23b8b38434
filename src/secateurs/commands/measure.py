"""``secateurs measure``: params, MACs and latency of a checkpoint, or (``--compare A B``)
the speed-up of one model over another, timed interleaved."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ._args import FROM_HELP, add_arch_args, add_input_shape_arg, add_json_arg, arch_spec, int_list, print_result
from ._checkpoint import input_shape as shape_of
from ._command import Command


def measure_checkpoint(ckpt: Path, input_shape: Sequence[int] | None = None, arch: Any = None, **kwargs: Any):
    """:func:`secateurs.measure` of the checkpoint's model, at its recorded input shape unless one is given."""
    from ..io._factory import load_model
    from ..measure import measure

    return measure(load_model(ckpt, arch), shape_of(ckpt, input_shape), **kwargs)


def compare_checkpoints(a: Path, b: Path, input_shape: Sequence[int] | None = None, arch: Any = None, **kwargs: Any):
    """``measure --compare``: the two models timed interleaved (see
    :func:`secateurs.measure.compare_latency`), at A's input shape unless one is given."""
    from ..io._factory import load_model
    from ..measure import compare_latency

    return compare_latency(load_model(a, arch), load_model(b, arch), shape_of(a, input_shape), **kwargs)


def add_arguments(p: argparse.ArgumentParser) -> None:
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
    add_input_shape_arg(p)
    p.add_argument(
        "--batch-sizes", type=int_list, default=[1, 64], help="comma-separated batch sizes to time latency at"
    )
    p.add_argument("--repeats", type=int, default=30, help="timed forward passes per batch size")
    p.add_argument("--warmup", type=int, default=5, help="untimed forward passes before timing")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="where latency is timed: cpu, cuda, cuda:1 ...")
    p.add_argument("--no-latency", action="store_true", help="params and MACs only")
    add_json_arg(p)


def run(args: argparse.Namespace) -> None:
    if args.compare:
        if args.ckpt is not None:
            raise ConfigError("give either --from CHECKPOINT or --compare A B, not both")
        c = compare_checkpoints(
            *args.compare,
            args.input_shape,
            batch_sizes=tuple(args.batch_sizes),
            threads=args.threads,
            device=args.device,
            budget_s=args.budget,
            arch=arch_spec(args),
        )
        a, b = args.compare
        print_result(args, {**c.to_dict(), "checkpoints": [str(a), str(b)]}, f"A: {a}\nB: {b}\n{c.summary()}")
        return
    if args.ckpt is None:
        raise ConfigError("secateurs measure needs --from CHECKPOINT, or --compare A B")
    m = measure_checkpoint(
        args.ckpt,
        args.input_shape,
        latency=not args.no_latency,
        batch_sizes=tuple(args.batch_sizes),
        warmup=args.warmup,
        repeats=args.repeats,
        device=args.device,
        threads=args.threads,
        arch=arch_spec(args),
    )
    print_result(args, m.to_dict(), m.summary())


COMMAND = Command(
    "measure",
    "params, MACs and latency of a checkpoint",
    add_arguments,
    run,
    examples="""examples:
  secateurs measure --from runs/r20 --threads 1
  secateurs measure --from runs/r20 --no-latency --json""",
)
