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
from dataclasses import asdict, dataclass, field
from pathlib import Path

from _common import machine, machine_line, markdown_table, write_results

from secateurs import commands
from secateurs.train import MODEL_FILE, STATE_FILE

DATASET = "fashion-mnist"
CACHE = Path(__file__).resolve().parent / "cache"
#: Profiles whose runs live in a fixed, committed folder instead of the cache, so a fresh clone
#: starts every method benchmark from them without retraining.
FIXED_ROOTS = {"converged": Path(__file__).resolve().parent / "checkpoints" / DATASET}
#: Issue 12's convergence rule: the last 3 epochs gain less than 0.1 point of test top-1 on average.
CONVERGENCE_WINDOW, CONVERGENCE_GAIN = 3, 0.1


@dataclass(frozen=True)
class Baseline:
    model: str
    epochs: int
    max_steps_per_epoch: int | None = None  # None: whole epochs (469 steps of 128)
    batch_size: int = 128
    lr: float = 0.1
    schedule: str = "onecycle"
    dataset: str = DATASET
    dataset_options: dict = field(default_factory=dict)
    channels_last: bool = False  # TrainConfig.channels_last: NHWC, faster on CPU for depthwise convs


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
    # Converged on 2 CPU cores (issue 12): committed under checkpoints/, one job per core.
    "converged": [
        Baseline("resnet20", epochs=30),
        Baseline("resnet56", epochs=30),
        # NHWC: a training step about 1.5x faster on one CPU thread (depthwise convs).
        Baseline("mobilenet_v2", epochs=30, channels_last=True),
    ],
    # A seconds-long smoke baseline on synthetic data, for the benchmark harness's tests.
    "tiny": [
        Baseline(
            "test_resnet",
            epochs=2,
            max_steps_per_epoch=8,
            batch_size=32,
            dataset="synthetic",
            dataset_options={"num_samples": 256},
        ),
    ],
}


def convergence(history: list[dict]) -> dict:
    """The average test top-1 gain per epoch over the last :data:`CONVERGENCE_WINDOW` epochs,
    and whether it is under :data:`CONVERGENCE_GAIN` point (None: too few epochs to say)."""
    top1 = [h["test_top1"] for h in history if h.get("test_top1") is not None]
    if len(top1) <= CONVERGENCE_WINDOW:
        return {"last_gain": None, "converged": None}
    gain = (top1[-1] - top1[-1 - CONVERGENCE_WINDOW]) / CONVERGENCE_WINDOW
    return {"last_gain": gain, "converged": gain < CONVERGENCE_GAIN}


def run_dir(model: str, profile: str, cache: Path = CACHE) -> Path:
    return FIXED_ROOTS[profile] / model if profile in FIXED_ROOTS else cache / profile / model


def _recipe(spec: Baseline, progress: bool = True) -> dict:
    recipe = {
        "epochs": spec.epochs,
        "batch_size": spec.batch_size,
        "lr": spec.lr,
        "schedule": spec.schedule,
        "progress": progress,
    }
    if spec.max_steps_per_epoch:
        recipe["max_steps_per_epoch"] = spec.max_steps_per_epoch
    if spec.channels_last:  # only when set: runs saved before the option compare equal
        recipe["channels_last"] = True
    return recipe


def ensure_baseline(
    model: str,
    profile: str = "quick",
    cache: Path = CACHE,
    data_dir: str | None = None,
    progress: bool = True,
    train: bool = True,
) -> Path:
    """The baseline checkpoint of ``model`` for ``profile``, training (or resuming) it first if needed.

    A cached run trained with another recipe than the profile's is refused, so a table never
    reports epochs that did not run. With ``train=False`` an unfinished run is refused instead
    of trained (a caller that must not start a long training, or one that may be running).
    """
    spec = {b.model: b for b in PROFILES[profile]}.get(model)
    if spec is None:
        raise SystemExit(f"no {model!r} baseline in profile {profile!r}; it has {[b.model for b in PROFILES[profile]]}")
    out = run_dir(model, profile, cache)
    recipe = _recipe(spec, progress)
    if (out / STATE_FILE).exists():
        saved = commands.read_run(out)["train"]
        differs = {k: (saved.get(k), v) for k, v in recipe.items() if k != "progress" and saved.get(k) != v}
        if differs:
            raise SystemExit(f"{out} was trained with another recipe (saved, profile): {differs}; delete it to retrain")
    metrics = out / "metrics.jsonl"
    if not (metrics.exists() and len(metrics.read_text().splitlines()) >= spec.epochs):
        if not train:
            done = len(metrics.read_text().splitlines()) if metrics.exists() else 0
            raise SystemExit(
                f"the {model} baseline in {out} has {done} of {spec.epochs} epochs; finish it first: "
                f"python benchmarks/baselines.py --profile {profile} --models {model}"
            )
        commands.train_command(
            out,
            resume=(out / STATE_FILE).exists(),
            model=model,
            dataset=spec.dataset,
            data_dir=data_dir,
            overrides=recipe,
            dataset_options=spec.dataset_options or None,
        )
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
        ev = commands.evaluate_checkpoint(ckpt, spec.dataset, args.data_dir, dataset_options=spec.dataset_options)
        m = commands.measure_checkpoint(ckpt, repeats=30)
        train_s = sum(h["epoch_time_s"] for h in history)
        conv = convergence(history)
        results.append(
            {
                "baseline": asdict(spec),
                "eval": ev,
                "measure": m.to_dict(),
                "train_time_s": train_s,
                "convergence": conv,
                "history": history,
            }
        )
        lat = m.to_dict()["latency"]["batches"] if m.latency else {}
        rows.append(
            [
                spec.model,
                spec.epochs,
                spec.max_steps_per_epoch or "all",
                f"{ev['top1']:.2f}",
                f"{m.params / 1e6:.3f}",
                f"{m.macs / 1e6:.1f}",
                *(f"{lat[str(b)]['median_ms']:.2f}" if str(b) in lat else "-" for b in (1, 64)),
                f"{train_s / 60:.1f}",
                "-"
                if conv["converged"] is None
                else f"{'yes' if conv['converged'] else 'no'} ({conv['last_gain']:+.2f})",
            ]
        )
        print(rows[-1], file=sys.stderr)
    m = machine()
    command = f"python benchmarks/baselines.py --profile {args.profile}"
    if args.models:
        command += " --models " + " ".join(args.models)
    md = "\n\n".join(
        [
            f"# Fashion-MNIST baselines, profile `{args.profile}`",
            f"Machine: {machine_line(m)}",
            f"Command: `{command}`",
            markdown_table(
                [
                    "model",
                    "epochs",
                    "steps/epoch",
                    "test top-1 (%)",
                    "params (M)",
                    "MACs (M)",
                    "latency b1 (ms)",
                    "latency b64 (ms)",
                    "train time (min)",
                    f"converged (gain/epoch, last {CONVERGENCE_WINDOW})",
                ],
                rows,
            ),
            "Recipes: " + "; ".join(f"{s.model}: batch {s.batch_size}, lr {s.lr}, {s.schedule}" for s in specs) + ". "
            "SGD momentum 0.9 nesterov, weight decay 5e-4, random crop (pad 4) + flip. Latency: median of 30 runs after 5 warm-up runs, CPU, the thread count above. MACs: conv and "
            "linear multiply-accumulates for one 1x32x32 image. Converged: the last "
            f"{CONVERGENCE_WINDOW} epochs gained less than {CONVERGENCE_GAIN} point of test top-1 per epoch on average.",
        ]
    )
    missing = [b.model for b in PROFILES[args.profile] if b.model not in {s.model for s in specs}]
    if missing:
        md += f"\n\nNot run in this invocation: {', '.join(missing)} (see the command)."
    write_results(
        f"baselines_{args.profile}",
        {
            "machine": m,
            "command": command,
            "dataset": ", ".join(sorted({s.dataset for s in specs})),
            "results": results,
        },
        md,
    )
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
