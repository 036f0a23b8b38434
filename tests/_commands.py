"""What several test modules share: the command lines of a small, fast ``secateurs`` run and the
launchers that run a command in a subprocess, alone or under ``torchrun`` with two ranks.

Kept in one place so that a change to the CLI's flags, or to how the torchrun tests start their
processes, is made once; the fixtures that train checkpoints from these live in ``conftest.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

#: The synthetic dataset cut to 128 samples: two batches of 64.
DATA = ["--dataset-option", "num_samples=128"]


def fast(steps_per_epoch: int = 2) -> list[str]:
    """Fine-tuning kept to ``steps_per_epoch`` steps of 64 an epoch on :data:`DATA`, without the
    latency comparison."""
    return [
        "--finetune-batch-size",
        "64",
        "--finetune-max-steps-per-epoch",
        str(steps_per_epoch),
        "--no-latency",
        *DATA,
    ]


#: :func:`fast` with two steps an epoch.
FAST = fast()
#: The torchrun tests' data: 256 samples of 4 classes, so that two ranks each see whole batches.
DDP_DATA = ["--dataset", "synthetic", "--dataset-option", "num_samples=256", "--dataset-option", "num_classes=4"]

#: ``torchrun`` with two ranks on this machine; a script or ``-m module`` follows.
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def train_argv(model: str, out: Path | str, *extra: str, epochs: int = 1, batch_size: int = 64) -> list[str]:
    """``secateurs train`` of ``model`` into ``out``, without progress lines; ``extra`` adds flags
    (the dataset among them)."""
    return [
        "train",
        "--model",
        model,
        *extra,
        "--epochs",
        str(epochs),
        "--batch-size",
        str(batch_size),
        "--no-progress",
        "--out",
        str(out),
    ]


def prune_argv(
    checkpoint: Path | str, out: Path | str, *extra: str, method: str | None = None, macs: float | None = None
) -> list[str]:
    """``secateurs prune --from checkpoint --out out``, then ``--method`` and ``--macs-reduction``
    where given, then ``extra``."""
    argv = ["prune", "--from", str(checkpoint), "--out", str(out)]
    if method is not None:
        argv += ["--method", method]
    if macs is not None:
        argv += ["--macs-reduction", str(macs)]
    return [*argv, *extra]


def subprocess_env(**extra: str) -> dict[str, str]:
    """This process's environment with one thread per process (two ranks share the test's cores)
    and unbuffered output (a failing rank's last lines reach the assertion message)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def run_ok(cmd: Sequence[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Runs ``cmd`` (five minutes at most) and asserts it succeeded, showing the end of its stderr
    when it did not."""
    done = subprocess.run(
        list(cmd), env=subprocess_env() if env is None else env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done
