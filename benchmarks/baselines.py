"""Train (once) and record the Fashion-MNIST baselines the method benchmarks start from.

Each baseline trains in ``CACHE/PROFILE/MODEL`` and is reused from there afterwards (an
interrupted one resumes). The results table records each one's accuracy, params, MACs,
latency and training time, with the machine described.

    .venv/bin/python benchmarks/baselines.py --profile quick   # CPU, within an hour on 2 cores
    .venv/bin/python benchmarks/baselines.py --profile full    # a GPU machine

Method benchmarks call :func:`ensure_baseline` to get a checkpoint.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from _common import machine, machine_line, markdown_table, write_results
from secateurs import runs
from secateurs.train import MODEL_FILE, STATE_FILE

DATASET = "fashion-mnist"
CACHE = Path(__file__).resolve().parent / "cache"


@dataclass(frozen=True)
class Baseline:
    model: str
    epochs: int
    max_steps_per_epoch: int | None = None  # None: whole epochs (469 steps of 128)
    batch_size: int = 128
    lr: float = 0.1
    schedule: str = "onecycle"


# The quick profile is sized for 2 CPU cores in about half an hour in total; its short
# schedules give baselines that are good, not converged. The full profile is for a GPU.
PROFILES: dict[str, list[Baseline]] = {
    "quick": [
        Baseline("resnet20", epochs=4),
        Baseline("resnet56", epochs=2),
        Baseline("vgg16", epochs=1, lr=0.05),
        Baseline("mobilenet_v2", epochs=1),
        Baseline("shufflenet_v2", epochs=1),
    ],
    "full": [
        Baseline("resnet20", epochs=40),
        Baseline("resnet56", epochs=40),
        Baseline("vgg16", epochs=40, lr=0.05),
        Baseline("mobilenet_v2", epochs=40),
        Baseline("shufflenet_v2", epochs=40),
    ],
}


def run_dir(model: str, profile: str, cache: Path = CACHE) -> Path:
    return cache / profile / model


def _recipe(spec: Baseline, progress: bool = True) -> dict:
    recipe = {"epochs": spec.epochs, "batch_size": spec.batch_size, "lr": spec.lr, "schedule": spec.schedule,
              "progress": progress}
    if spec.max_steps_per_epoch:
        recipe["max_steps_per_epoch"] = spec.max_steps_per_epoch
    return recipe


def ensure_baseline(model: str, profile: str = "quick", cache: Path = CACHE, data_dir: str | None = None,
                    progress: bool = True) -> Path:
    """The baseline checkpoint of ``model`` for ``profile``, training (or resuming) it first if needed.

    A cached run trained with another recipe than the profile's is refused, so a table never
    reports epochs that did not run.
    """
    spec = {b.model: b for b in PROFILES[profile]}.get(model)
    if spec is None:
        raise SystemExit(f"no {model!r} baseline in profile {profile!r}; it has {[b.model for b in PROFILES[profile]]}")
    out = run_dir(model, profile, cache)
    recipe = _recipe(spec, progress)
    if (out / STATE_FILE).exists():
        saved = runs.read_run(out)["train"]
        differs = {k: (saved.get(k), v) for k, v in recipe.items() if k != "progress" and saved.get(k) != v}
        if differs:
            raise SystemExit(f"{out} was trained with another recipe (saved, profile): {differs}; delete it to retrain")
    metrics = out / "metrics.jsonl"
    if not (metrics.exists() and len(metrics.read_text().splitlines()) >= spec.epochs):
        runs.train_command(out, resume=(out / STATE_FILE).exists(), model=model, dataset=DATASET,
                           data_dir=data_dir, overrides=recipe)
    return out / MODEL_FILE


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    p.add_argument("--models", nargs="+", help="a subset of the profile's models")
    p.add_argument("--cache", type=Path, default=CACHE)
    p.add_argument("--data-dir")
    args = p.parse_args(argv)
    specs = [b for b in PROFILES[args.profile] if not args.models or b.model in args.models]
    results, rows = [], []
    for spec in specs:
        ckpt = ensure_baseline(spec.model, args.profile, args.cache, args.data_dir)
        history = [json.loads(l) for l in (ckpt.parent / "metrics.jsonl").read_text().splitlines()]
        ev = runs.evaluate_checkpoint(ckpt, DATASET, args.data_dir)
        m = runs.measure_checkpoint(ckpt, repeats=30)
        train_s = sum(h["epoch_time_s"] for h in history)
        results.append({"baseline": asdict(spec), "eval": ev, "measure": m.to_dict(), "train_time_s": train_s,
                        "history": history})
        lat = m.to_dict()["latency"]["batches"] if m.latency else {}
        rows.append([spec.model, spec.epochs, spec.max_steps_per_epoch or "all", f"{ev['top1']:.2f}",
                     f"{m.params / 1e6:.3f}", f"{m.macs / 1e6:.1f}",
                     *(f"{lat[str(b)]['median_ms']:.2f}" if str(b) in lat else "-" for b in (1, 64)),
                     f"{train_s / 60:.1f}"])
        print(rows[-1], file=sys.stderr)
    m = machine()
    command = f"python benchmarks/baselines.py --profile {args.profile}"
    if args.models:
        command += " --models " + " ".join(args.models)
    md = "\n\n".join([
        f"# Fashion-MNIST baselines, profile `{args.profile}`",
        f"Machine: {machine_line(m)}", f"Command: `{command}`",
        markdown_table(["model", "epochs", "steps/epoch", "test top-1 (%)", "params (M)", "MACs (M)",
                        "latency b1 (ms)", "latency b64 (ms)", "train time (min)"], rows),
        "Recipes: " + "; ".join(f"{s.model}: batch {s.batch_size}, lr {s.lr}, {s.schedule}" for s in specs) + ". "
        "SGD momentum 0.9 nesterov, weight decay 5e-4, random crop (pad 4) + flip. Latency: median of 30 runs after 5 warm-up runs, CPU, the thread count above. MACs: conv and "
        "linear multiply-accumulates for one 1x32x32 image.",
    ])
    missing = [b.model for b in PROFILES[args.profile] if b.model not in {s.model for s in specs}]
    if missing:
        md += f"\n\nNot run in this invocation: {', '.join(missing)} (see the command)."
    write_results(f"baselines_{args.profile}", {"machine": m, "command": command, "dataset": DATASET,
                                                 "results": results}, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
