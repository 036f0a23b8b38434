"""Fine-tuning modes compared on one fcs-pruned model: plain cross-entropy (tft), mutual
learning with the unpruned network as a trained peer (mlft, Yang & Xiao, Appl. Intell. 2022) and distillation from
the frozen unpruned network (kd), each for E/4, E/2 and E epochs, with the wall time of each.

The claim under test (Yang & Xiao, Appl. Intell. 2022, doi:10.1007/s10489-022-03403-9):
mlft reaches tft's accuracy after E epochs in at most E/2 epochs.
Every run starts from the same pruned checkpoint (fcs, no fine-tuning, cached) with the same
optimiser settings as prune_filters.py; only the objective and the epoch count change.

    .venv/bin/python benchmarks/finetune_modes.py --profile quick --models resnet56

Runs are cached in ``cache/finetune_modes/PROFILE/MODEL/``; results go to
results/finetune_modes_PROFILE.{json,md}. Also times fcs scoring with 256 samples.

Where mlft's step cost goes, against tft's (interleaved in one process, ratios per pass):

    .venv/bin/python benchmarks/finetune_modes.py --step-profile \
        --checkpoint benchmarks/checkpoints/fashion-mnist/resnet20/model.safetensors

writes results/finetune_modes_step_profile.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import busy_note, machine, markdown_table, timing_watch, write_report
from baselines import CACHE, DATASET, ensure_baseline
from prune_filters import BUDGETS, Budget, _train_overrides

from secateurs import load, read_meta, save, trace
from secateurs.commands import checkpoint_dataset
from secateurs.data.loader import LoaderConfig, as_loader
from secateurs.methods import ScoreContext, get_method
from secateurs.pipeline import FINETUNE_MODES, PruneConfig, prune
from secateurs.pipeline.finetune import finetune
from secateurs.pipeline.run import calibration_batches, top1_accuracy

MODES = ("tft", "mlft", "kd")
METHOD = "fcs"


def _data(ckpt: Path):
    meta = read_meta(ckpt)
    return (
        checkpoint_dataset(ckpt, meta, DATASET, "train", None)[1],
        checkpoint_dataset(ckpt, meta, DATASET, "test", None)[1],
        meta,
    )


def pruned_checkpoint(ckpt: Path, target: float, root: Path, method: str = METHOD) -> tuple[Path, dict[str, Any]]:
    """The baseline pruned by ``method`` to ``target`` MACs reduction, without fine-tuning (cached)."""
    out = root / f"{method}-{int(round(100 * target))}"
    path, rec_path = out / "pruned.safetensors", out / "pruned.json"
    if rec_path.exists():
        return path, json.loads(rec_path.read_text())
    train_set, test_set, meta = _data(ckpt)
    pruned, res = prune(
        load(ckpt),
        method,
        macs_reduction=target,
        finetune="none",
        train_set=train_set,
        test_set=test_set,
        latency=False,
        evaluate_before=False,
    )
    out.mkdir(parents=True, exist_ok=True)
    save(pruned, path, {k: meta[k] for k in ("dataset", "input_shape", "normalisation")})
    rec = {
        "achieved": res.achieved,
        "top1_after_pruning": res.after["top1"],
        "macs": res.after["macs"],
        "params": res.after["params"],
        "scoring_s": res.timing_s["scoring"],
    }
    rec_path.write_text(json.dumps(rec, indent=2))
    return path, rec


def run_mode(ckpt: Path, pruned_path: Path, mode: str, epochs: int, budget: Budget, out: Path) -> dict[str, Any]:
    """Fine-tune the pruned checkpoint; the wall time is the training's (the test set is evaluated after it)."""
    train_set, test_set, _ = _data(ckpt)
    model, reference = load(pruned_path), load(ckpt)
    config = PruneConfig(
        method=METHOD,
        macs_reduction=0.5,
        finetune=mode,
        finetune_epochs=epochs,
        finetune_train=_train_overrides(budget),
    )
    result = finetune(model, mode, reference, train_set, None, config.train_config(epochs), None)
    rec = {
        "mode": mode,
        "epochs": epochs,
        "top1": top1_accuracy(model, test_set, torch.device("cpu")),
        "wall_s": result.wall_time_s,
        "train_loss": [h["train_loss"] for h in result.history],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "record.json").write_text(json.dumps(rec, indent=2))
    return rec


def step_times(
    ckpt: Path, pruned_path: Path, modes: list[str], budget: Budget, steps: int, trials: int = 2
) -> dict[str, float]:
    """Seconds per training step of each mode, timed back to back (``steps`` steps, best of
    ``trials`` interleaved passes), so that every mode sees the same machine load."""
    train_set, _, _ = _data(ckpt)
    best: dict[str, float] = {}
    for _ in range(trials):
        for mode in modes:
            model, reference = load(pruned_path), load(ckpt)
            config = PruneConfig(
                method=METHOD,
                macs_reduction=0.5,
                finetune=mode,
                finetune_epochs=1,
                finetune_train={**_train_overrides(budget), "max_steps_per_epoch": steps},
            )
            result = finetune(model, mode, reference, train_set, None, config.train_config(1), None)
            best[mode] = min(best.get(mode, float("inf")), result.wall_time_s / steps)
    return best


#: What ``--step-profile`` times: a whole training step of each mode (objective, backward,
#: optimizer step over every trained network), as (label, mode, options).
STEP_VARIANTS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("tft", "tft", {}),
    ("kd", "kd", {}),
    ("mlft peer_every=1 (the paper's)", "mlft", {"peer_every": 1}),
    ("mlft peer_every=2", "mlft", {"peer_every": 2}),
    ("mlft peer_every=4 (default)", "mlft", {"peer_every": 4}),
    ("mlft peer_every=4, distil_every_step=False", "mlft", {"peer_every": 4, "distil_every_step": False}),
    ("mlft peer=pruned, peer_every=1", "mlft", {"peer": "pruned", "peer_every": 1}),
    ("mlft peer=pruned, peer_every=4", "mlft", {"peer": "pruned", "peer_every": 4}),
)


def _mode_step(ckpt: Path, pruned_path: Path, mode: str, options: dict[str, Any]) -> Callable[[Any, Any], None]:
    spec = FINETUNE_MODES[mode]
    config = PruneConfig(method="l1", macs_reduction=0.5, finetune=mode).train_config(1)
    model = load(pruned_path)
    objective, companions = spec.build(model, load(ckpt), config, spec.make_options(options))
    trained = [model, *companions.values()]
    for m in trained:
        m.train()
    optimizer = torch.optim.SGD(
        [p for m in trained for p in m.parameters()], lr=config.lr, momentum=config.momentum, nesterov=True
    )

    def step(x, y) -> None:
        loss, _ = objective(model, x, y, **companions)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _component_steps(ckpt: Path, pruned_path: Path) -> dict[str, Callable[[Any, Any], None]]:
    """The parts an mlft step is made of, each on its own."""
    pruned, unpruned = load(pruned_path).train(), load(ckpt).train()

    def forward(m):
        def run(x, y):
            m(x)

        return run

    def no_grad_forward(m):
        def run(x, y):
            with torch.no_grad():
                m(x)

        return run

    def forward_backward(m):
        def run(x, y):
            torch.nn.functional.cross_entropy(m(x), y).backward()

        return run

    return {
        "pruned: forward": forward(pruned),
        "pruned: forward + backward": forward_backward(pruned),
        "unpruned: forward without gradients": no_grad_forward(unpruned),
        "unpruned: forward + backward": forward_backward(unpruned),
    }


def step_profile(ckpt: Path, pruned_path: Path, batches: int, reps: int, batch_size: int = 128) -> dict[str, Any]:
    """Seconds per step of each variant and part, every one timed on the same ``batches``
    augmented batches once per pass, ``reps`` passes; the ratio to tft is taken within each
    pass (so a machine whose load changes between passes still compares like with like) and
    its median over the passes is reported. Data loading is timed on its own."""
    train_set, _, _ = _data(ckpt)
    loader = as_loader(train_set, LoaderConfig(batch_size=batch_size, train=True, augment=True, seed=0))
    loader.set_epoch(0)
    it = iter(loader)
    data = [next(it) for _ in range(batches)]
    steps = {label: _mode_step(ckpt, pruned_path, mode, o) for label, mode, o in STEP_VARIANTS}
    steps.update(_component_steps(ckpt, pruned_path))

    def load_batches(x, y) -> None:  # one fresh batch from the loader per call
        it = iter(loader)
        next(it)

    steps["data loading and augmentation (one batch)"] = load_batches
    for s in steps.values():
        s(*data[0])  # warm-up
    times: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(reps):
        for label, s in steps.items():
            t0 = time.perf_counter()
            for x, y in data:
                s(x, y)
            times[label].append((time.perf_counter() - t0) / batches)
        print(
            f"pass {r + 1}/{reps}: " + ", ".join(f"{k} {v[-1] / times['tft'][-1]:.2f}" for k, v in times.items()),
            file=sys.stderr,
            flush=True,
        )
    return {
        label: {
            "s_per_step_median": statistics.median(v),
            "ratio_to_tft_median": statistics.median(a / b for a, b in zip(v, times["tft"])),
            "ratio_to_tft_passes": [a / b for a, b in zip(v, times["tft"])],
        }
        for label, v in times.items()
    }


def step_profile_main(args: argparse.Namespace, argv: list[str] | None) -> int:
    ckpt = Path(args.checkpoint)
    root = CACHE / "finetune_modes" / "step_profile" / ckpt.parent.name
    pruned_path, pruned = pruned_checkpoint(ckpt, args.reduction, root, args.method)
    torch.set_num_threads(1)
    with timing_watch() as watch:
        profile = step_profile(ckpt, pruned_path, args.profile_batches, args.profile_reps)
    note = busy_note(watch.window)
    command = "python benchmarks/finetune_modes.py " + " ".join(argv if argv is not None else sys.argv[1:])
    data = {"machine": machine(), "command": command, "checkpoint": str(ckpt), "pruned": pruned, "profile": profile}
    rows = [[k, f"{v['ratio_to_tft_median']:.2f}", f"{v['s_per_step_median']:.3f}"] for k, v in profile.items()]
    section = (
        f"{ckpt} pruned by {args.method} to {100 * pruned['achieved']:.1f}% fewer MACs; batch 128, augmented, "
        f"one torch thread; {args.profile_batches} batches per pass, {args.profile_reps} passes, every variant "
        "timed once per pass.\n\n"
        + markdown_table(["what", "cost per step / tft's (median of per-pass ratios)", "s per step (median)"], rows)
        + ("\n\n" + note if note else "")
    )
    write_report(
        "finetune_modes_step_profile",
        data,
        "Where mlft's step cost goes, against tft's",
        "A step is the objective, the backward pass and the optimizer step over every trained network. "
        "The ratios, not the seconds, are the result: the seconds depend on the machine's load.",
        [section],
    )
    return 0


def scoring_time(ckpt: Path, samples: int, threads: int) -> float:
    """Seconds for fcs to score the baseline on ``samples`` calibration samples (median of 3)."""
    train_set, _, meta = _data(ckpt)
    model = load(ckpt)
    graph = trace(model, torch.zeros(1, *meta["input_shape"]))
    method = get_method(METHOD)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times = []
        for _ in range(3):
            ctx = ScoreContext(
                model, graph, method.make_options(), calibration_batches(train_set, samples, 0, torch.device("cpu"))
            )
            t0 = time.perf_counter()
            method.score(ctx)
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
    return sorted(times)[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=sorted(BUDGETS), default="quick")
    p.add_argument("--models", nargs="+", default=["resnet56"])
    p.add_argument("--reduction", type=float, default=0.5)
    p.add_argument("--epochs", type=int, help="E (default: 4 for quick, the profile's epochs for full)")
    p.add_argument(
        "--steps-per-epoch",
        type=int,
        help="cap on steps per epoch (default: 30 for quick, so E = 4 epochs train as much as "
        "prune_filters' 2; none for full)",
    )
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--cached-only", action="store_true", help="report cached runs only, train nothing")
    p.add_argument("--score-threads", type=int, default=2, help="torch threads for the fcs scoring time")
    p.add_argument("--time-steps", type=int, default=10, help="steps per mode for the back-to-back step times")
    p.add_argument("--step-profile", action="store_true", help="only time where mlft's step cost goes (see above)")
    p.add_argument("--checkpoint", help="--step-profile: the unpruned checkpoint (.safetensors)")
    p.add_argument("--method", default="l1", help="--step-profile: the pruning method (default l1)")
    p.add_argument("--profile-batches", type=int, default=4, help="--step-profile: batches per pass")
    p.add_argument("--profile-reps", type=int, default=5, help="--step-profile: passes")
    args = p.parse_args(argv)
    if args.step_profile:
        if args.profile_batches % 4:
            p.error(
                f"--profile-batches must be a multiple of 4 (got {args.profile_batches}): a pass then holds whole "
                "cycles of peer_every=2 and 4, learning steps and the others in their proportion"
            )
        if not args.checkpoint:
            p.error(
                "--step-profile needs --checkpoint PATH (e.g. benchmarks/checkpoints/fashion-mnist/resnet20/model.safetensors)"
            )
        return step_profile_main(args, argv)
    budget = BUDGETS[args.profile]
    steps = args.steps_per_epoch or (30 if args.profile == "quick" else budget.max_steps_per_epoch)
    budget = Budget(budget.epochs, steps, budget.lr, budget.batch_size)
    full = args.epochs or (4 if args.profile == "quick" else budget.epochs)
    counts = sorted({max(1, full // 4), max(1, full // 2), full})
    data: dict[str, Any] = {"machine": machine(), "budget": budget.__dict__, "epochs": full, "models": {}}
    sections, missing = [], []
    for name in args.models:
        ckpt = ensure_baseline(name, args.profile)
        root = CACHE / "finetune_modes" / args.profile / name
        pruned_path, pruned = pruned_checkpoint(ckpt, args.reduction, root)
        runs = []
        for mode in args.modes:
            for e in counts:
                out = root / f"{METHOD}-{int(round(100 * args.reduction))}" / f"steps-{steps}" / f"{mode}-{e}"
                if (out / "record.json").exists():
                    runs.append(json.loads((out / "record.json").read_text()))
                elif args.cached_only:
                    missing.append(f"{name} {mode} {e} epochs")
                else:
                    print(f"[{name}] {mode}, {e} epochs ...", file=sys.stderr, flush=True)
                    runs.append(run_mode(ckpt, pruned_path, mode, e, budget, out))
                    print(
                        f"[{name}] {mode}, {e} epochs: top-1 {runs[-1]['top1']:.2f}% ({runs[-1]['wall_s']:.0f}s)",
                        file=sys.stderr,
                        flush=True,
                    )
        score_s = scoring_time(ckpt, 256, args.score_threads)
        per_step = step_times(ckpt, pruned_path, args.modes, budget, args.time_steps)
        data["models"][name] = {
            "pruned": pruned,
            "runs": runs,
            "fcs_scoring_s_256": score_s,
            "score_threads": args.score_threads,
            "step_s": per_step,
        }
        tft = next((r for r in runs if r["mode"] == "tft" and r["epochs"] == full), None)
        rows = [
            [
                r["mode"],
                r["epochs"],
                f"{r['top1']:.2f}",
                f"{r['train_loss'][-1]:.3f}",
                f"{r['wall_s']:.0f}",
                f"{per_step[r['mode']] * r['epochs'] * steps:.0f}" if r["mode"] in per_step else "-",
            ]
            for r in runs
        ]
        verdict = []
        if tft is not None:
            for mode in ("mlft", "kd"):
                reach = [r["epochs"] for r in runs if r["mode"] == mode and r["top1"] >= tft["top1"]]
                first = min(reach) if reach else None
                verdict.append(
                    f"{mode} reaches tft's {full}-epoch top-1 ({tft['top1']:.2f}%) "
                    + (f"with {first} epochs" if first else f"in none of {counts} epochs")
                    + f": goal (at most {full // 2}) {'met' if first and first <= full // 2 else 'missed'}."
                )
        sections.append(
            f"## {name}\n\nPruned by fcs to {100 * pruned['achieved']:.1f}% fewer MACs "
            f"({pruned['macs'] / 1e6:.1f} M MACs, {pruned['params'] / 1e6:.3f} M params), top-1 "
            f"{pruned['top1_after_pruning']:.2f}% before fine-tuning. fcs scoring with 256 samples: "
            f"{score_s:.2f} s ({args.score_threads} torch threads, median of 3).\n\n"
            + markdown_table(
                [
                    "mode",
                    "epochs",
                    "test top-1 (%)",
                    "last epoch's train loss",
                    "training wall (s)",
                    "training time at the back-to-back step time (s)",
                ],
                rows,
            )
            + "\n\nSeconds per step, timed back to back: "
            + ", ".join(
                f"{m} {v:.3f}" + (f" ({v / per_step['tft']:.2f}x tft)" if "tft" in per_step else "")
                for m, v in per_step.items()
            )
            + ("\n\n" + "\n".join(f"- {v}" for v in verdict) if verdict else "")
        )
    command = "python benchmarks/finetune_modes.py " + " ".join(argv if argv is not None else sys.argv[1:])
    data["command"] = command
    intro = (
        f"Every run starts from the same pruned model; SGD lr {budget.lr} cosine over the run's own epochs, "
        f"batch {budget.batch_size}"
        + (f", at most {budget.max_steps_per_epoch} steps per epoch" if budget.max_steps_per_epoch else "")
        + ". mlft trains the unpruned network as the peer (both updated), kd distils from it frozen; T = 1, "
        "weight 1. Training wall: the run's own training time (the test set is evaluated once, after it), "
        "taken while other jobs may have shared the machine; the last column prices each run at the step "
        "times measured back to back in one pass, which every mode shares. The mlft/kd train loss includes "
        "the distillation term (mlft: both peers' losses)."
    )
    write_report(
        f"finetune_modes_{args.profile}",
        data,
        f"Fine-tuning modes after fcs pruning, Fashion-MNIST, profile `{args.profile}`",
        intro,
        sections,
        missing,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
