"""Do hnsi's high-level layers really drop input channels, and does that make the network
faster? (Issue 14, goal 2: at 50% kernel-sparse MACs on resnet56 and vgg16, whole input
channels removed in the high-level layers, dense MACs down by at least 20%, b64 latency down
measurably, the low-level layers keeping every input channel.)

For each model, from a checkpoint (``--checkpoint MODEL=PATH``) or, without one, the zoo
model at random init (seed 0; the structure hnsi picks then follows random weights):
``hnsi`` (two stages) and ``l1`` filter pruning, each to the same MACs reduction with no data
and no fine-tuning (hnsi's target is on kernel-sparse MACs, l1's dense and sparse MACs are
equal). Recorded per run: dense and kernel-sparse MACs, params, input channels per conv
before and after (low-level and high-level convs apart, as hnsi's record names them), and the
b64 latency of the unpruned model and each pruned one, timed round-robin in one process
(``--repeats`` forwards each, medians) so that every model sees the same load. Accuracy is
not measured here: it needs fine-tuning (the matrix's ``hnsi`` cells).

A busy machine makes the latency unreliable: then the figures are printed, flagged, and not
written unless ``--publish-busy``.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/hnsi_structure.py \\
        --checkpoint resnet56=benchmarks/checkpoints/fashion-mnist/resnet56/model.safetensors

Results: results/hnsi_structure.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from _common import busy_note, machine, markdown_table, timing_watch, write_report

import secateurs
from secateurs import count_macs, count_params, load, read_meta

GOAL_DENSE_FALL = 20.0  # percent


def _model(name: str, checkpoints: dict[str, Path]) -> tuple[nn.Module, tuple[int, ...], str]:
    path = checkpoints.get(name)
    if path is not None:
        return load(path).eval(), tuple(read_meta(path)["input_shape"]), str(path)
    torch.manual_seed(0)
    return secateurs.create_model(name).eval(), (3, 32, 32), "random init (seed 0)"


def _in_channels(model: nn.Module) -> dict[str, int]:
    return {n: m.in_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def _channels_dropped(before: dict[str, int], after: dict[str, int], names: list[str]) -> dict[str, int]:
    """Input channels each named conv no longer reads (convs removed whole count all)."""
    return {n: before[n] - after.get(n, 0) for n in names if before[n] - after.get(n, 0) > 0}


def prune_one(model: nn.Module, shape: tuple[int, ...], method: str, reduction: float) -> dict[str, Any]:
    started = time.perf_counter()
    pruned, result = secateurs.prune(
        model, method, macs_reduction=reduction, finetune="none", latency=False, input_shape=shape
    )
    seconds = time.perf_counter() - started
    before, after = _in_channels(model), _in_channels(pruned)
    low = next((r.details.get("low_layers") for r in result.rounds if r.details.get("low_layers")), None)
    low = low or []
    high = [n for n in before if n not in low]
    return {
        "model": pruned,
        "method": method,
        "prune_s": seconds,
        "macs": count_macs(pruned, shape),
        "sparse_macs": count_macs(pruned, shape, sparse=True),
        "params": count_params(pruned),
        "low_layers": low,
        "dropped_low": _channels_dropped(before, after, low),
        "dropped_high": _channels_dropped(before, after, high),
    }


def latency_b64(models: dict[str, nn.Module], shape: tuple[int, ...], repeats: int) -> dict[str, float]:
    """Median ms of one b64 forward per model, the models timed round-robin."""
    x = torch.randn(64, *shape)
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for m in models.values():  # warm-up
            m(x)
        for _ in range(repeats):
            for k, m in models.items():
                t = time.perf_counter()
                m(x)
                times[k].append(1000 * (time.perf_counter() - t))
    return {k: statistics.median(v) for k, v in times.items()}


def run_model(name: str, checkpoints: dict[str, Path], reduction: float, repeats: int) -> dict[str, Any]:
    model, shape, source = _model(name, checkpoints)
    base = {"macs": count_macs(model, shape), "params": count_params(model)}
    runs = [prune_one(model, shape, m, reduction) for m in ("hnsi", "l1")]
    with timing_watch() as watch:
        ms = latency_b64({"unpruned": model, **{r["method"]: r["model"] for r in runs}}, shape, repeats)
    for r in runs:
        r.pop("model")
        r["dense_macs_fall_pct"] = 100 * (1 - r["macs"] / base["macs"])
        r["sparse_macs_fall_pct"] = 100 * (1 - r["sparse_macs"] / base["macs"])
        r["latency_b64_ms"] = ms[r["method"]]
        r["speedup_b64"] = ms["unpruned"] / ms[r["method"]]
    return {
        "model": name,
        "source": source,
        "input_shape": list(shape),
        "baseline": {**base, "latency_b64_ms": ms["unpruned"]},
        "runs": runs,
        "load": watch.window.to_dict(),
        "busy": busy_note(watch.window),
    }


def _rows(res: dict[str, Any]) -> list[list[str]]:
    b = res["baseline"]
    rows = [[res["model"], "(unpruned)", f"{b['macs'] / 1e6:.1f}", "-", "-", f"{b['params']:,}", "-", "-"]]
    rows[0] += [f"{b['latency_b64_ms']:.1f}", "1.00"]
    for r in res["runs"]:
        high = f"{sum(r['dropped_high'].values())} in {len(r['dropped_high'])} convs"
        low = f"{sum(r['dropped_low'].values())} in {len(r['dropped_low'])} convs" if r["low_layers"] else "-"
        rows.append(
            [
                res["model"],
                r["method"],
                f"{r['macs'] / 1e6:.1f}",
                f"{r['dense_macs_fall_pct']:.1f}",
                f"{r['sparse_macs_fall_pct']:.1f}",
                f"{r['params']:,}",
                high,
                low,
                f"{r['latency_b64_ms']:.1f}",
                f"{r['speedup_b64']:.2f}",
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resnet56", "vgg16"])
    p.add_argument("--checkpoint", nargs="*", default=[], help="MODEL=PATH of a trained model (default: random init)")
    p.add_argument("--reduction", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument(
        "--publish-busy", action="store_true", help="write results/ even when the latency ran on a busy machine"
    )
    args = p.parse_args(argv)
    checkpoints = dict(item.split("=", 1) for item in args.checkpoint)
    checkpoints = {k: Path(v) for k, v in checkpoints.items()}
    results = [run_model(name, checkpoints, args.reduction, args.repeats) for name in args.models]
    rows = [row for res in results for row in _rows(res)]
    hnsi = {res["model"]: next(r for r in res["runs"] if r["method"] == "hnsi") for res in results}
    verdicts = [
        f"{m}: dense MACs {r['dense_macs_fall_pct']:.1f}% down (goal >= {GOAL_DENSE_FALL:.0f}%: "
        f"{'met' if r['dense_macs_fall_pct'] >= GOAL_DENSE_FALL else 'missed'}), low-level convs "
        + ("keep every input channel" if not r["dropped_low"] else f"drop input channels in {sorted(r['dropped_low'])}")
        + f", b64 speed-up {r['speedup_b64']:.2f}x"
        for m, r in hnsi.items()
    ]
    busy = [f"{res['model']}: {res['busy']}" for res in results if res["busy"]]
    headers = [
        "model",
        "method",
        "dense MACs (M)",
        "dense MACs fall %",
        "kernel-sparse MACs fall %",
        "params",
        "input channels dropped (hnsi: high-level convs; l1: all convs)",
        "input channels dropped, hnsi low-level convs",
        "b64 latency (ms, median)",
        "b64 speed-up",
    ]
    data = {
        "machine": machine(),
        "command": "python benchmarks/hnsi_structure.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "reduction": args.reduction,
        "repeats": args.repeats,
        "results": results,
    }
    sources = "; ".join(f"{r['model']}: {r['source']}" for r in results)
    intro = (
        f"hnsi (two stages) and l1 to {100 * args.reduction:.0f}% MACs reduction (hnsi: kernel-sparse MACs), no data, "
        f"no fine-tuning; sources: {sources}. Latency: "
        f"{args.repeats} b64 forwards per model, round-robin in one process, torch threads {torch.get_num_threads()}."
    )
    if busy and not args.publish_busy:
        print(markdown_table(headers, rows), *busy, *verdicts, sep="\n\n")
        print("\nNot written to benchmarks/results/: the machine was busy. Rerun idle, or pass --publish-busy.")
        return 0
    write_report(
        "hnsi_structure",
        data,
        "hnsi's adjustable input channels: structure and b64 latency",
        intro,
        [markdown_table(headers, rows), *busy, "\n".join(f"- {v}" for v in verdicts)],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
