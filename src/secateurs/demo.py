"""``make demo``: the embedded default run, end to end, with a summary a user can trust.

Trains a small baseline on Fashion-MNIST (the dataset Debian ships), evaluates it and
measures it. A finished demo run is reused, an interrupted one resumed. The pruning steps
join here as the methods land.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from . import runs
from .train import MODEL_FILE, STATE_FILE

DATASET = "fashion-mnist"


def _finished_epochs(out: Path) -> int:
    metrics = out / "metrics.jsonl"
    if not (out / STATE_FILE).exists() or not metrics.exists():
        return 0
    return sum(1 for line in metrics.read_text().splitlines() if line.strip())


def run(out: Path, model: str = "resnet20", epochs: int = 2, data_dir: str | None = None,
        max_steps_per_epoch: int | None = None, fresh: bool = False) -> dict:
    out = Path(out)
    if fresh and out.exists():
        shutil.rmtree(out)
    started = time.perf_counter()
    done = _finished_epochs(out)
    if done == 0 or done < epochs:
        overrides = {"epochs": epochs, "batch_size": 128, "lr": 0.1, "schedule": "onecycle",
                     "max_steps_per_epoch": max_steps_per_epoch}
        if done == 0 and out.exists():
            shutil.rmtree(out)
        print(f"[1/3] training {model} on {DATASET} for {epochs} epoch(s) -> {out}")
        runs.train_command(out, resume=done > 0, model=model, dataset=DATASET, data_dir=data_dir,
                           overrides={k: v for k, v in overrides.items() if v is not None})
    else:
        print(f"[1/3] reusing the finished run in {out} (pass --fresh to train again)")
    ckpt = out / MODEL_FILE
    print("[2/3] evaluating on the test split")
    ev = runs.evaluate_checkpoint(ckpt, DATASET, data_dir)
    print("[3/3] measuring params, MACs and latency")
    m = runs.measure_checkpoint(ckpt, repeats=20)
    summary = {"model": model, "dataset": DATASET, "epochs": epochs, "checkpoint": str(ckpt),
               "eval": ev, "measure": m.to_dict(), "wall_time_s": time.perf_counter() - started}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    print()
    print("=" * 64)
    print(f"secateurs demo: {model} on {DATASET}, {epochs} epoch(s)")
    print(f"  test top-1 accuracy : {ev['top1']:.2f}%  (loss {ev['loss']:.4f}, {ev['samples']} images)")
    print("  " + m.summary().replace("\n", "\n  "))
    print(f"  checkpoint          : {ckpt}")
    print(f"  wall time           : {summary['wall_time_s']:.0f} s")
    print("  pruning             : not yet in this version (the methods join the demo as they land)")
    print("=" * 64)
    return summary
