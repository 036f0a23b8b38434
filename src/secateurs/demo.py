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
from ._atomic import atomic_write_text
from .errors import ConfigError
from .train import MODEL_FILE, STATE_FILE

DATASET = "fashion-mnist"


def _demo_run(out: Path, model: str) -> dict | None:
    """The demo's own run.json in ``out``, or None when ``out`` is missing or empty.

    Refuses any other folder: the demo deletes and rewrites its folder, so it must never
    take a user's directory or another run for its own.
    """
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return None
    try:
        run = runs.read_run(out)
    except ConfigError:
        run = None
    if run is None or run.get("dataset") != DATASET or run.get("model") != model:
        raise ConfigError(f"{str(out)!r} exists and is not a {model} demo run; the demo only writes into an empty "
                          "folder or its own run. Pass another --out.")
    return run


def run(out: Path, model: str = "resnet20", epochs: int = 2, data_dir: str | None = None,
        max_steps_per_epoch: int | None = None, fresh: bool = False) -> dict:
    out = Path(out)
    started = time.perf_counter()
    overrides = {"epochs": epochs, "batch_size": 128, "lr": 0.1, "schedule": "onecycle",
                 "max_steps_per_epoch": max_steps_per_epoch}
    existing = _demo_run(out, model)
    if existing is not None and not fresh:
        saved = {k: existing["train"].get(k) for k in overrides}
        if saved != overrides:
            raise ConfigError(f"{str(out)!r} holds a demo run with other options {saved}; pass --fresh to train "
                              "again with the options asked for")
    if existing is not None and (fresh or not (out / STATE_FILE).exists()):
        shutil.rmtree(out)  # only ever our own run, checked above
        existing = None
    metrics = out / "metrics.jsonl"
    done = len(metrics.read_text().splitlines()) if existing is not None and metrics.exists() else 0
    if done < epochs:
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
    atomic_write_text(out / "demo_summary.json", json.dumps(summary, indent=2))
    print()
    print("=" * 64)
    print(f"secateurs demo: {model} on {DATASET}, {epochs} epoch(s)")
    print(f"  test top-1 accuracy : {ev['top1']:.2f}%  (loss {ev['loss']:.4f}, {ev['samples']} images)")
    print("  " + m.summary().replace("\n", "\n  "))
    print(f"  checkpoint          : {ckpt}")
    print(f"  wall time           : {summary['wall_time_s']:.0f} s")
    print(f"  prune it next       : secateurs prune --from {ckpt} --method l1-capped --macs-reduction 0.5 "
          f"--out {out.parent / 'demo-pruned'}")
    print("=" * 64)
    return summary
