"""Reproduce the oneDNN heap corruption met by the matrix cell ``resnet20__l1-capped__macs75__s0``:
``l1-capped`` to 75% MACs in 2 rounds of 10 fine-tuning steps each, channels-last, on the
committed resnet20 baseline. With torch 2.13.0+cpu the process aborts in the second round's
backward pass ("free(): invalid next size" / "double free or corruption"); with
``--no-channels-last`` or ``--no-mkldnn`` it finishes (about a minute on one thread).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/repro_channels_last_abort.py                     # aborts
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/repro_channels_last_abort.py --no-channels-last  # finishes
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/repro_channels_last_abort.py --no-mkldnn         # finishes

``MALLOC_CHECK_=3`` in the environment makes glibc stop at the first bad free.
"""

from __future__ import annotations

import argparse
import faulthandler
from pathlib import Path

import torch

from secateurs import PruneConfig, load, load_dataset, prune

CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "fashion-mnist" / "resnet20" / "model.safetensors"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--no-channels-last", action="store_true", help="train in the usual NCHW layout")
    p.add_argument("--no-mkldnn", action="store_true", help="torch.backends.mkldnn.enabled = False")
    p.add_argument("--steps", type=int, default=10, help="fine-tuning steps per round")
    args = p.parse_args()
    faulthandler.enable()  # the Python stack of the abort
    torch.backends.mkldnn.enabled = not args.no_mkldnn
    train = {
        "max_steps_per_epoch": args.steps,
        "channels_last": not args.no_channels_last,
        "lr": 0.01,
        "batch_size": 128,
        "progress": False,
    }
    config = PruneConfig(
        method="l1-capped",
        macs_reduction=0.75,
        rounds=2,
        finetune="tft",
        finetune_epochs=5,
        finetune_train=train,
        seed=0,
        latency=False,
        evaluate_before=False,
        eval_each_epoch=False,
    )
    _, result = prune(load(CHECKPOINT), config=config, train_set=load_dataset("fashion-mnist", "train"))
    print("finished:", [r.channels_removed for r in result.rounds], "channels removed per round")


if __name__ == "__main__":
    main()
