"""How many batches BN recalibration needs: test top-1 right after a cut, against the number
N of training batches of 128 the BN statistics are re-estimated on (the measurement behind
``secateurs.pipeline.recalibration.DEFAULT_BN_RECALIBRATION``).

One checkpoint is cut once (no fine-tuning, no recalibration); each N and seed then
recalibrates a copy of the cut model on the batches the pipeline would draw for that seed
(round 1), and the test split scores it. The unpruned model is recalibrated too, on the
largest N: on its own training data it should stay within noise of its trained top-1.

    OMP_NUM_THREADS=1 .venv/bin/secateurs train --model resnet20 --dataset fashion-mnist --epochs 1 \\
        --max-steps-per-epoch 150 --out /tmp/h1-r20
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bn_recalibration.py --checkpoint /tmp/h1-r20/model.safetensors

Results: results/bn_recalibration.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from _common import machine, machine_line, markdown_table, write_results

from secateurs import load, read_meta
from secateurs.commands import checkpoint_dataset
from secateurs.data import ImageDataset
from secateurs.pipeline import prune
from secateurs.pipeline.recalibration import BATCH_SIZE, recalibration_seed
from secateurs.pipeline.run import calibration_batches, top1_accuracy
from secateurs.train import recalibrate_bn

CPU = torch.device("cpu")


def _recalibrated_top1(model: nn.Module, train_set, test_set, n: int, seed: int) -> tuple[float, float]:
    """(test top-1, seconds spent recalibrating) of a copy of ``model`` recalibrated on ``n`` batches."""
    net = copy.deepcopy(model)
    batches = calibration_batches(train_set, n * BATCH_SIZE, recalibration_seed(seed, 1), CPU, BATCH_SIZE)
    t0 = time.perf_counter()
    recalibrate_bn(net, batches())
    seconds = time.perf_counter() - t0
    return top1_accuracy(net, test_set, CPU), seconds


def _test_subset(test_set: ImageDataset, samples: int | None) -> ImageDataset:
    """A fixed seeded subset: a 10,000-image evaluation takes minutes on a shared core."""
    if samples is None or samples >= len(test_set.labels):
        return test_set
    idx = torch.randperm(len(test_set.labels), generator=torch.Generator().manual_seed(0))[:samples]
    return ImageDataset(test_set.info, test_set.images[idx], test_set.labels[idx], test_set.split)


def measure(
    ckpt: Path, method: str, reduction: float, ns: list[int], seeds: list[int], test_samples: int | None
) -> dict[str, Any]:
    meta = read_meta(ckpt)
    dataset, test_set = checkpoint_dataset(ckpt, meta, None, "test", None)
    test_set = _test_subset(test_set, test_samples)
    train_set = checkpoint_dataset(ckpt, meta, dataset, "train", None)[1]
    model = load(ckpt)
    cut, res = prune(
        model,
        method,
        macs_reduction=reduction,
        train_set=train_set,
        test_set=test_set,
        finetune="none",
        latency=False,
        bn_recalibration=0,
    )
    out: dict[str, Any] = {
        "checkpoint": str(ckpt),
        "model": meta.get("run", {}).get("model"),
        "method": method,
        "test_samples": len(test_set.labels),
        "trained_top1": meta.get("metrics", {}).get("test_top1"),
        "macs_reduction": res.achieved,
        "top1_unpruned": res.before["top1"],
        "top1_after_cut": res.rounds[0].top1_after_cut,
        "rows": [],
    }
    for n in ns:
        runs = [_recalibrated_top1(cut, train_set, test_set, n, s) for s in seeds]
        top1 = [t for t, _ in runs]
        row = {
            "batches": n,
            "top1": top1,
            "mean": statistics.mean(top1),
            "std": statistics.stdev(top1) if len(top1) > 1 else 0.0,
            "seconds": statistics.mean(s for _, s in runs),
        }
        out["rows"].append(row)
        print(
            f"N={n}: top-1 {row['mean']:.2f} +- {row['std']:.2f} ({row['seconds']:.2f} s)", file=sys.stderr, flush=True
        )
    unpruned = [_recalibrated_top1(model, train_set, test_set, max(ns), s)[0] for s in seeds]
    out["unpruned_recalibrated"] = {"batches": max(ns), "top1": unpruned, "mean": statistics.mean(unpruned)}
    return out


def _markdown(data: dict[str, Any]) -> str:
    r = data["result"]
    rows = [
        [
            row["batches"],
            f"{row['mean']:.2f} ± {row['std']:.2f}",
            " / ".join(f"{t:.2f}" for t in row["top1"]),
            f"{row['seconds']:.2f}",
        ]
        for row in r["rows"]
    ]
    u = r["unpruned_recalibrated"]
    return "\n\n".join(
        [
            "# BN recalibration: top-1 right after the cut against the number of batches",
            f"Machine: {machine_line(data['machine'])}",
            f"Command: `{data['command']}`",
            f"{r['model']} ({r['checkpoint']}, trained top-1 {r['trained_top1']}% on the whole test split), "
            f"{r['method']} cut to {100 * r['macs_reduction']:.2f}% MACs reduction, "
            f"no fine-tuning. Test top-1 on {r['test_samples']} test images (a seeded subset): unpruned "
            f"{r['top1_unpruned']:.2f}%, right after the cut "
            f"{r['top1_after_cut']:.2f}%. Each N: recalibration on N training batches of {BATCH_SIZE}, "
            f"seeds {data['seeds']} (the pipeline's round-1 batches for that seed).",
            markdown_table(["N batches", "top-1 % (mean ± std)", "per seed", "recalibration s"], rows),
            f"Unpruned model recalibrated on {u['batches']} batches of its own training data: top-1 "
            f"{' / '.join(f'{t:.2f}' for t in u['top1'])}% (trained: {r['top1_unpruned']:.2f}%).",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--method", default="l1")
    p.add_argument("--macs-reduction", type=float, default=0.5)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 5, 10, 20, 50])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--test-samples", type=int, default=2000, help="seeded subset of the test split (default 2000)")
    p.add_argument("--name", default="bn_recalibration", help="results/NAME.{json,md}")
    args = p.parse_args(argv)
    result = measure(args.checkpoint, args.method, args.macs_reduction, args.batches, args.seeds, args.test_samples)
    data = {
        "machine": machine(),
        "command": " ".join(["python", "benchmarks/bn_recalibration.py", *sys.argv[1:]]),
        "seeds": args.seeds,
        "result": result,
    }
    md = _markdown(data)
    write_results(args.name, data, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
