"""How many BatchNorm channels probability pruning could remove: the distribution of
``P(y <= 0) = Phi(-beta / |gamma|)`` per layer type (Zhao et al., J. Comput. Sci. Technol.
2022; docs/methods.md), for one checkpoint or for every committed version of one.

Probability pruning removes a channel only when ``P >= tau`` (0.99 by default). Whether a
network has such channels is a property of its training, not of the method, so this script
shows where they are (the BN after a stem conv, a 1x1 expansion, a depthwise conv) and, with
``--git-history``, how their number grows epoch by epoch as a baseline trains (each epoch's
checkpoint is committed under ``checkpoints/``).

    .venv/bin/python benchmarks/probability_distribution.py --git-history checkpoints/fashion-mnist/mobilenet_v2/model.safetensors
    .venv/bin/python benchmarks/probability_distribution.py --checkpoint final=checkpoints/fashion-mnist/mobilenet_v2/model.safetensors
    # while a baseline trains, after each epoch (a copy of its model.safetensors in cache/):
    .venv/bin/python benchmarks/probability_distribution.py --append --name probability_distribution_mobilenet_v2 \
        --checkpoint "epoch 3=cache/mobilenet_v2_epochs/epoch_3.safetensors"

Results: results/probability_distribution.{json,md} and probability_distribution.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from _common import RESULTS, command_line, machine, machine_line, markdown_table, write_results

from secateurs import load, read_meta
from secateurs.graph import trace
from secateurs.methods._gaussian import prob_nonpositive
from secateurs.methods._points import activation_after_bn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
THRESHOLDS = (0.5, 0.9, 0.95, 0.99)
#: Histogram bins of P over [0, 1], kept in the results so that ``--append`` can redraw the plot.
BINS = 40
PLOTTED = 5
#: |gamma| below this is "shrunk": weight decay drives an unused channel's gamma towards 0,
#: and a small |gamma| with a negative beta is what gives P near 1.
SMALL_GAMMA = 1e-2


def layer_type(conv: nn.Module | None) -> str:
    """The kind of layer whose output a BN normalises."""
    if not isinstance(conv, nn.Conv2d):
        return "other"
    if conv.groups > 1 and conv.groups == conv.in_channels:
        return "depthwise"
    if conv.kernel_size == (1, 1):
        return "pointwise 1x1"
    return f"full {conv.kernel_size[0]}x{conv.kernel_size[1]}"


def bn_probabilities(model: nn.Module, input_shape: list[int]) -> dict[str, dict[str, torch.Tensor]]:
    """``{layer type: {"p": P per channel, "gamma": |gamma| per channel}}`` over every BN read
    only by a ReLU-type activation: the candidates of probability pruning."""
    graph = trace(model, torch.zeros(1, *input_shape))
    modules = dict(model.named_modules())
    producer = {
        n.target: modules.get(n.args[0].target) if n.args and getattr(n.args[0], "op", "") == "call_module" else None
        for n in graph.fx_graph.nodes
        if n.op == "call_module"
    }
    found: dict[str, dict[str, list[torch.Tensor]]] = {}
    for bn in activation_after_bn(model, graph):
        m = modules[bn]
        if m.weight is None or m.bias is None:
            continue
        kind = found.setdefault(layer_type(producer.get(bn)), {"p": [], "gamma": []})
        kind["p"].append(prob_nonpositive(m.weight.detach(), m.bias.detach()))
        kind["gamma"].append(m.weight.detach().double().abs())
    return {k: {name: torch.cat(v) for name, v in d.items()} for k, d in sorted(found.items())}


def summarise(dist: dict[str, dict[str, torch.Tensor]]) -> list[dict[str, Any]]:
    """One row per layer type, and one for all of them when there are several."""
    every = {
        "p": torch.cat([d["p"] for d in dist.values()]),
        "gamma": torch.cat([d["gamma"] for d in dist.values()]),
    }
    rows = []
    for kind, d in [*dist.items(), *([("all", every)] if len(dist) > 1 else [])]:
        p, g = d["p"], d["gamma"]
        rows.append(
            {
                "type": kind,
                "channels": p.numel(),
                "share_p_at_least": {str(t): float((p >= t).double().mean()) for t in THRESHOLDS},
                "median_p": float(p.median()),
                "median_abs_gamma": float(g.median()),
                "share_small_gamma": float((g < SMALL_GAMMA).double().mean()),
                "histogram": torch.histc(p.double(), bins=BINS, min=0.0, max=1.0).long().tolist(),
            }
        )
    return rows


def committed_versions(path: Path, tmp: Path) -> list[tuple[str, Path]]:
    """Every committed version of ``path`` (oldest first), written to files in ``tmp`` and
    labelled by the number of epochs in the ``metrics.jsonl`` beside it at that commit."""
    if not path.resolve().is_relative_to(ROOT):
        raise SystemExit(f"--git-history {path}: not inside the repository ({ROOT}); pass --checkpoint LABEL=PATH")
    rel = path.resolve().relative_to(ROOT)
    commits = _git("log", "--reverse", "--format=%H", "--", str(rel)).split()
    if not commits:
        raise SystemExit(f"{path} has no committed version; commit it or pass --checkpoint LABEL=PATH")
    out = []
    for c in commits:
        metrics = _git("show", f"{c}:{rel.parent / 'metrics.jsonl'}", check=False)
        epochs = len([line for line in metrics.splitlines() if line.strip()])
        file = tmp / f"{c}.safetensors"
        file.write_bytes(
            subprocess.run(["git", "show", f"{c}:{rel}"], capture_output=True, check=True, cwd=ROOT).stdout
        )
        out.append((f"epoch {epochs}", file))
    return out


def _git(*args: str, check: bool = True) -> str:
    r = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT)
    if check and r.returncode:
        raise SystemExit(f"git {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout if r.returncode == 0 else ""


def _plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({row["type"] for r in results for row in r["rows"] if row["type"] != "all"})
    # At most PLOTTED checkpoints, evenly spaced, the first and the last among them: more
    # lines than that cannot be told apart (the tables keep every one).
    picks = sorted({round(i * (len(results) - 1) / (PLOTTED - 1)) for i in range(PLOTTED)}) if results else []
    results = [results[i] for i in picks]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4 * len(kinds), 3.2), squeeze=False)
    edges = [i / BINS for i in range(BINS + 1)]
    for ax, kind in zip(axes[0], kinds, strict=True):
        for r in results:
            row = next((row for row in r["rows"] if row["type"] == kind), None)
            if row is not None:
                ax.stairs(row["histogram"], edges, label=r["label"])
        ax.axvline(0.99, color="grey", linestyle=":", linewidth=1)
        ax.set_yscale("symlog", linthresh=1)
        ax.set_title(f"BN after a {kind} conv", fontsize=9)
        ax.set_xlabel("P(y <= 0)")
    axes[0][0].set_ylabel("channels")
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", action="append", default=[], metavar="LABEL=PATH")
    p.add_argument("--git-history", type=Path, help="every committed version of this checkpoint")
    p.add_argument("--name", default="probability_distribution", help="results file stem")
    p.add_argument(
        "--append",
        action="store_true",
        help="add to results/NAME.json (a label already there is replaced): one epoch at a time as a baseline trains",
    )
    args = p.parse_args(argv)
    sources: list[tuple[str, Path]] = []
    for item in args.checkpoint:
        label, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"--checkpoint {item!r}: write LABEL=PATH, e.g. final=checkpoints/.../model.safetensors")
        sources.append((label, Path(path)))
    previous = RESULTS / f"{args.name}.json"
    kept = json.loads(previous.read_text()) if args.append and previous.is_file() else {}
    results, commands = kept.get("results", []), kept.get("commands", [])
    with tempfile.TemporaryDirectory(prefix="pdist-") as tmp:
        if args.git_history is not None:
            sources += committed_versions(args.git_history, Path(tmp))
        if not sources:
            raise SystemExit("nothing to read: pass --checkpoint LABEL=PATH or --git-history PATH")
        for label, path in sources:
            meta = read_meta(path)
            dist = bn_probabilities(load(path).eval(), meta["input_shape"])
            results = [r for r in results if r["label"] != label]
            top1 = (meta.get("metrics") or {}).get("test_top1")
            results.append({"label": label, "test_top1": top1, "rows": summarise(dist)})
            print(f"{label}: {results[-1]['rows'][-1]['share_p_at_least']}", file=sys.stderr, flush=True)
    command = command_line("probability_distribution.py", argv)
    commands.append(command)
    png = RESULTS / f"{args.name}.png"
    _plot(results, png)
    table = [
        [
            r["label"],
            "-" if r["test_top1"] is None else f"{r['test_top1']:.2f}",
            row["type"],
            row["channels"],
            *(f"{100 * row['share_p_at_least'][str(t)]:.1f}" for t in THRESHOLDS),
            f"{row['median_p']:.3f}",
            f"{row['median_abs_gamma']:.3g}",
            f"{100 * row['share_small_gamma']:.1f}",
        ]
        for r in results
        for row in r["rows"]
    ]
    data = {"machine": machine(), "command": command, "commands": commands, "results": results}
    md = "\n\n".join(
        [
            "# Where probability pruning finds channels: P(y <= 0) per layer type",
            f"Machine: {machine_line(data['machine'])}",
            "Commands (each `--append` adds its checkpoints):\n\n" + "\n".join(f"    {c}" for c in commands),
            "Every BN read only by a ReLU-type activation (the candidates of `probability`), grouped by the conv "
            "before it. A channel is removed at tau when P >= tau (default 0.99); a depthwise block's channel "
            "is flagged when either of its two BNs flags it, so the method can remove somewhat more than one "
            f"row's share. *Small gamma*: |gamma| < {SMALL_GAMMA}. Plot: `{png.name}` (log counts; dotted: 0.99).",
            markdown_table(
                [
                    "checkpoint",
                    "test top-1 (%)",
                    "BN after",
                    "channels",
                    *(f"P >= {t} (%)" for t in THRESHOLDS),
                    "median P",
                    "median abs(gamma)",
                    "small gamma (%)",
                ],
                table,
            ),
        ]
    )
    write_results(args.name, data, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
