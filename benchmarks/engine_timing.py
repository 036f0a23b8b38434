"""Is the pruning engine as fast as Torch-Pruning's? Dependency analysis and surgery, timed.

For each model (32x32 input, batch 1), in the same process and alternating per repeat:

* analysis: ``secateurs.trace`` (FX trace, channel-id pass, groups) against Torch-Pruning's
  ``DependencyGraph().build_dependency``, each on a fresh copy of the model;
* surgery for one 50% request: every second unit of every prunable group of our graph.
  Ours: one ``remove_units(model, graph, units, example_inputs)`` call, which validates the
  request, narrows the layers and checks every shape on meta tensors. Theirs: for each of
  our groups, the group Torch-Pruning gives for the group's producer layer with the same
  channel indices, then ``group.prune()`` for each. The Torch-Pruning groups are collected
  before the clock starts (their cost is recorded apart), so both columns time the surgery
  alone.

The same two steps on torchvision models at 224x224 (``--torchvision``; random weights),
and end to end (``--end-to-end``): ``secateurs.prune(model, "l1", macs_reduction=0.5,
finetune="none", latency=False)`` with no data against one Torch-Pruning ``MetaPruner``
(L1 magnitude, 50% channel ratio, classifier ignored): its construction, which builds the
dependency graph, and one ``step()``.

Each figure is the median of ``--repeats`` runs after one untimed warm-up. Afterwards the
two pruned models must have the same parameters, MACs, layer shapes and outputs; any
disagreement is reported in the table, not hidden. Goal: ours at most 1.0x theirs.
The CPU time other processes took is measured for a second before anything is timed,
while each model is timed, and for a second after (``load`` in the JSON; the rule of
``secateurs.measure.load``), with the load average before and after. If any window was
busy the figures are printed, flagged, and **not written** to ``results/``; only
``--publish-busy`` writes them, with the flag in the title and every note.

    .venv/bin/python benchmarks/engine_timing.py [--models resnet56 vgg16 mobilenet_v2] [--repeats 5]
        [--torchvision resnet50 efficientnet_b0 mobilenet_v3_large] [--end-to-end resnet56 vgg16 mobilenet_v2]
        [--publish-busy]
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.metadata
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch_pruning as tp
from _common import busy_note, machine, machine_line, markdown_table, timing_watch, write_results

import secateurs
from secateurs.graph import ChannelGraph, Unit, remove_units
from secateurs.measure import count_macs, count_params
from secateurs.measure.load import load_average

INPUT = (3, 32, 32)
TV_INPUT = (3, 224, 224)
GOAL = 1.0  # ours / theirs, at most
# The distribution's version: torch_pruning.__version__ still says 1.6.0 in the 1.6.1 wheel.
TP_VERSION = importlib.metadata.version("torch-pruning")


def half_request(graph: ChannelGraph) -> list[tuple[str, list[Unit]]]:
    """Every second unit of every prunable group, with the group's producer layer."""
    request = []
    for g in graph.prunable_groups:
        units = g.units[1::2]
        if units:
            request.append((g.name, units))
    return request


def producer_indices(layer: str, units: list[Unit]) -> list[int]:
    """The output channels of ``layer`` that ``units`` hold (one per unit)."""
    return [next(m.index for m in u.members if m.module == layer and m.kind == "out") for u in units]


def tp_groups(model: nn.Module, dg: Any, request: list[tuple[str, list[Unit]]]) -> list[Any]:
    groups = []
    for layer, units in request:
        target = model.get_submodule(layer)
        fn = tp.prune_linear_out_channels if isinstance(target, nn.Linear) else tp.prune_conv_out_channels
        group = dg.get_pruning_group(target, fn, idxs=producer_indices(layer, units))
        if not dg.check_pruning_group(group):
            raise RuntimeError(f"Torch-Pruning rejects the group of {layer!r}")
        groups.append(group)
    return groups


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    gc.collect()  # neither side pays for the other's garbage
    t0 = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - t0) * 1e3


def zoo_model(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    return secateurs.create_model(name).eval(), INPUT


def torchvision_model(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    from secateurs.models._torchvision import import_torchvision  # plain `import torchvision` fails on CPU torch

    return getattr(import_torchvision(), name)(weights=None).eval(), TV_INPUT


def run_model(name: str, repeats: int, make: Callable[[str], tuple[nn.Module, tuple[int, ...]]] = zoo_model) -> dict:
    torch.manual_seed(0)
    base, shape = make(name)
    x = torch.randn(1, *shape)
    times: dict[str, list[float]] = {
        k: [] for k in ("ours_trace", "tp_build", "ours_surgery", "ours_surgery_unchecked", "tp_get_groups", "tp_prune")
    }
    for r in range(repeats + 1):  # r == 0 is the warm-up
        ours = copy.deepcopy(base)
        graph, t_trace = timed(lambda: secateurs.trace(ours, x))
        request = half_request(graph)
        units = [u for _, us in request for u in us]
        unchecked = copy.deepcopy(base)
        _, t_unchecked = timed(lambda: remove_units(unchecked, graph, units))
        _, t_surgery = timed(lambda: remove_units(ours, graph, units, x))

        theirs = copy.deepcopy(base)
        dg, t_build = timed(lambda: tp.DependencyGraph().build_dependency(theirs, example_inputs=x))
        groups, t_groups = timed(lambda: tp_groups(theirs, dg, request))
        _, t_prune = timed(lambda: [g.prune() for g in groups])
        if r:
            for key, t in (
                ("ours_trace", t_trace),
                ("tp_build", t_build),
                ("ours_surgery", t_surgery),
                ("ours_surgery_unchecked", t_unchecked),
                ("tp_get_groups", t_groups),
                ("tp_prune", t_prune),
            ):
                times[key].append(t)
    return {
        "model": name,
        "input": [1, *shape],
        "groups": len(graph.groups),
        "prunable_groups": len(request),
        "units_removed": len(units),
        "params_before": count_params(base),
        "macs_before": count_macs(base, shape),
        **agreement(ours.eval(), theirs.eval(), shape),
        "median_ms": {k: statistics.median(v) for k, v in times.items()},
        "samples_ms": times,
    }


def _classifier(model: nn.Module) -> list[nn.Module]:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return last[-1:]


def run_end_to_end(name: str, repeats: int) -> dict[str, Any]:
    """``secateurs.prune`` with no data against one Torch-Pruning MetaPruner (built + one step)."""
    torch.manual_seed(0)
    base = secateurs.create_model(name).eval()
    x = torch.randn(1, *INPUT)
    times: dict[str, list[float]] = {"ours_prune": [], "tp_metapruner": []}
    for r in range(repeats + 1):
        (ours, _), t_ours = timed(
            lambda: secateurs.prune(base, "l1", macs_reduction=0.5, finetune="none", latency=False, input_shape=INPUT)
        )
        theirs = copy.deepcopy(base)

        def tp_step(theirs: nn.Module = theirs) -> None:
            pruner = tp.pruner.MetaPruner(
                theirs,
                x,
                importance=tp.importance.MagnitudeImportance(p=1),
                pruning_ratio=0.5,
                ignored_layers=_classifier(theirs),
            )
            pruner.step()

        _, t_tp = timed(tp_step)
        if r:
            times["ours_prune"].append(t_ours)
            times["tp_metapruner"].append(t_tp)
    before = count_macs(base, INPUT)
    return {
        "model": name,
        "macs_before": before,
        "macs_after": {"ours": count_macs(ours, INPUT), "tp": count_macs(theirs, INPUT)},
        "median_ms": {k: statistics.median(v) for k, v in times.items()},
        "samples_ms": times,
    }


def quiet_window(seconds: float = 1.0) -> Any:
    """The other processes' CPU use while we sleep: was the machine quiet around the timing?"""
    with timing_watch() as watch:
        time.sleep(seconds)
    return watch.window


def agreement(ours: nn.Module, theirs: nn.Module, shape: tuple[int, ...] = INPUT) -> dict[str, Any]:
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ours(x) - theirs(x)).abs().max().item()
    return {
        "params_after": {"ours": count_params(ours), "tp": count_params(theirs)},
        "macs_after": {"ours": count_macs(ours, shape), "tp": count_macs(theirs, shape)},
        "same_layer_shapes": shapes(ours) == shapes(theirs),
        "max_output_diff": diff,
    }


def _pair(d: dict[str, int]) -> str:
    same = "" if d["ours"] == d["tp"] else " **DISAGREE**"
    return f"{d['ours']:,} / {d['tp']:,}{same}"


def _revision() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "src"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + uncommitted changes in src/" if dirty else "")


def paired_spread(ours: list[float], theirs: list[float]) -> tuple[float, float]:
    """The quartiles (25th, 75th percentile) of the per-repeat ratios ours_i / theirs_i: the
    two sides of a repeat run back to back, so the ratio cancels slow drifts of the machine,
    and its spread says how far a ratio of medians can be trusted."""
    ratios = sorted(a / b for a, b in zip(ours, theirs))
    if len(ratios) < 2:
        return ratios[0], ratios[0]
    q = statistics.quantiles(ratios, n=4, method="inclusive")
    return q[0], q[2]


def _row(res: dict[str, Any]) -> list[str]:
    med, samples = res["median_ms"], res["samples_ms"]
    res["trace_ratio"] = med["ours_trace"] / med["tp_build"]
    res["surgery_ratio"] = med["ours_surgery"] / med["tp_prune"]
    res["goal_met"] = {"trace": res["trace_ratio"] <= GOAL, "surgery": res["surgery_ratio"] <= GOAL}
    res["ratio_iqr"] = {
        "trace": paired_spread(samples["ours_trace"], samples["tp_build"]),
        "surgery": paired_spread(samples["ours_surgery"], samples["tp_prune"]),
    }
    # A miss whose paired ratios' middle half reaches below the goal is within the noise.
    res["within_noise"] = {k: not res["goal_met"][k] and res["ratio_iqr"][k][0] <= GOAL for k in res["goal_met"]}
    iqr = lambda k: f" ({res['ratio_iqr'][k][0]:.2f}-{res['ratio_iqr'][k][1]:.2f})"  # noqa: E731
    res["pruned_models_agree"] = (
        res["params_after"]["ours"] == res["params_after"]["tp"]
        and res["macs_after"]["ours"] == res["macs_after"]["tp"]
        and res["same_layer_shapes"]
        and res["max_output_diff"] <= 1e-4
    )
    return [
        f"{res['model']} ({res['input'][-1]}x{res['input'][-1]})",
        f"{med['ours_trace']:.1f}",
        f"{med['tp_build']:.1f}",
        f"{res['trace_ratio']:.2f}x" + iqr("trace"),
        f"{med['ours_surgery']:.1f}",
        f"{med['tp_prune']:.1f}",
        f"{res['surgery_ratio']:.2f}x" + iqr("surgery"),
        _pair(res["params_after"]),
        _pair(res["macs_after"]),
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=["resnet56", "vgg16", "mobilenet_v2"])
    p.add_argument("--torchvision", nargs="*", default=["resnet50", "efficientnet_b0", "mobilenet_v3_large"])
    p.add_argument("--end-to-end", nargs="*", default=["resnet56", "vgg16", "mobilenet_v2"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--publish-busy",
        action="store_true",
        help="write results/ even when the machine was busy (flagged); by default busy figures are only printed",
    )
    args = p.parse_args(argv)
    results, e2e, rows, e2e_rows, windows = [], [], [], [], {}
    load_before = load_average()
    windows["before (1 s idle)"] = quiet_window()
    cases = [(n, zoo_model) for n in args.models] + [(n, torchvision_model) for n in args.torchvision]
    for name, make in cases:
        with timing_watch() as watch:  # was the machine quiet while this model was timed?
            res = run_model(name, args.repeats, make)
        windows[name] = watch.window
        res["load"] = watch.window.to_dict()
        results.append(res)
        rows.append(_row(res))
        print(rows[-1], file=sys.stderr)
    for name in args.end_to_end:
        with timing_watch() as watch:
            res = run_end_to_end(name, args.repeats)
        windows[f"{name} end to end"] = watch.window
        res["load"] = watch.window.to_dict()
        med = res["median_ms"]
        res["ratio"] = med["ours_prune"] / med["tp_metapruner"]
        e2e.append(res)
        e2e_rows.append(
            [
                name,
                f"{med['ours_prune']:.0f}",
                f"{med['tp_metapruner']:.0f}",
                f"{res['ratio']:.1f}x",
                _pair(res["macs_after"]).replace(" **DISAGREE**", ""),
                f"{res['macs_before']:,}",
            ]
        )
        print(e2e_rows[-1], file=sys.stderr)
    windows["after (1 s idle)"] = quiet_window()
    load_after = load_average()
    m = machine()
    command = "python benchmarks/engine_timing.py " + " ".join(argv if argv is not None else sys.argv[1:])
    missed = [f"{r['model']} {k}" for r in results for k, ok in r["goal_met"].items() if not ok]
    noise = [f"{r['model']} {k}" for r in results for k, yes in r["within_noise"].items() if yes]
    disagree = [r["model"] for r in results if not r["pruned_models_agree"]]
    busy = [f"{name}: {note}" for name, window in windows.items() if (note := busy_note(window))]
    la = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    load_line = f"1-minute load average {la(load_before)} before, {la(load_after)} after, on {m['cpu_count']} cores."
    notes = [
        *(
            [
                "**BUSY MACHINE: these figures are relative only** (ours and theirs alternate in one process, so "
                "both saw the same load). " + load_line
            ]
            if busy
            else [load_line]
        ),
        *busy,
        f"**Goal: ours at most {GOAL:.1f}x theirs** (ratio = ours / Torch-Pruning, medians; in brackets the "
        "25th-75th percentiles of the per-repeat ratios, each repeat timing both back to back). "
        + (f"Missed: {', '.join(missed)}." if missed else "Met for every model and both steps.")
        + (
            f" Of these, within the noise (the middle half of the paired ratios reaches {GOAL:.1f}x or below): "
            f"{', '.join(noise)}."
            if noise
            else ""
        ),
        "After the 50% request the two pruned models "
        + (
            f"**disagree** for {', '.join(disagree)} (see `params_after`, `macs_after`, `same_layer_shapes`, "
            "`max_output_diff` in the JSON)."
            if disagree
            else "have the same parameters, MACs and layer shapes, and outputs within "
            f"{max(r['max_output_diff'] for r in results):.1e}."
        )
        if results
        else "",
        "Request: every second unit (channel with everything coupled to it) of every prunable group. "
        "Ours = `secateurs.trace` and one `remove_units(model, graph, units, example_inputs)` (validation, "
        "surgery, shape check on meta tensors); without the shape check it takes "
        + ", ".join(f"{r['median_ms']['ours_surgery_unchecked']:.1f} ms ({r['model']})" for r in results)
        + ". "
        "Theirs = `DependencyGraph().build_dependency` and `group.prune()` of the group Torch-Pruning gives for "
        "each of our groups' producer layer with the same indices; collecting those groups beforehand (not in the "
        "column) takes " + ", ".join(f"{r['median_ms']['tp_get_groups']:.1f} ms ({r['model']})" for r in results) + ".",
        f"Medians of {args.repeats} repeats after one warm-up, ours and theirs alternating in one process; "
        "every sample is in the JSON.",
    ]
    e2e_section = (
        [
            "## End to end (32x32, no data)",
            'Ours: `secateurs.prune(model, "l1", macs_reduction=0.5, finetune="none", latency=False)`. Theirs: '
            "`MetaPruner(model, x, MagnitudeImportance(p=1), pruning_ratio=0.5, ignored_layers=[classifier])` "
            "built and stepped once. The requests differ (a MACs target against a channel ratio), so the MACs "
            "after are given for context, not compared.",
            markdown_table(
                [
                    "model",
                    "ours prune (ms)",
                    "TP MetaPruner + step (ms)",
                    "ratio",
                    "MACs after (ours / TP)",
                    "MACs before",
                ],
                e2e_rows,
            ),
        ]
        if e2e_rows
        else []
    )
    title = "# Pruning engine against Torch-Pruning (batch 1; zoo 32x32, torchvision 224x224)"
    md = "\n\n".join(
        [
            title + (" — BUSY MACHINE, relative figures only" if busy else ""),
            f"Machine: {machine_line(m)}",
            f"Torch-Pruning {TP_VERSION}; secateurs {_revision()}. Command: `{command.strip()}`",
            markdown_table(
                [
                    "model",
                    "ours trace+groups (ms)",
                    "TP build_dependency (ms)",
                    "ratio",
                    "ours surgery (ms)",
                    "TP prune (ms)",
                    "ratio",
                    "params after (ours / TP)",
                    "MACs after (ours / TP)",
                ],
                rows,
            ),
            *[n for n in notes if n],
            *e2e_section,
        ]
    )
    print(md)
    if busy and not args.publish_busy:
        print(
            "\nNot written to benchmarks/results/: the machine was busy (see above). Rerun on an idle machine, "
            "or pass --publish-busy to write these figures flagged as busy.",
            file=sys.stderr,
        )
        return 3
    write_results(
        "engine_timing",
        {
            "machine": m,
            "command": command.strip(),
            "torch_pruning": TP_VERSION,
            "secateurs_revision": _revision(),
            "repeats": args.repeats,
            "busy": bool(busy),
            "load_average": {"before": load_before, "after": load_after},
            "quiet_windows": {k: w.to_dict() for k, w in windows.items() if k.endswith("idle)")},
            "goal_ratio": GOAL,
            "models": results,
            "end_to_end": e2e,
        },
        md,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
