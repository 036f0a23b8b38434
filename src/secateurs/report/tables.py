"""The sections of a run's ``report.md``: plain markdown tables, every number as the run
recorded it, each section naming the ``metrics.json`` keys it shows.

A section is a function from a :class:`RunRecord` to its lines (none when it does not
apply to the run); :data:`SECTIONS` lists them in the order they appear, so a new section
is one function and one entry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .record import EPOCHS_FILE, RunRecord, top1_trajectory


def fmt(value: Any) -> str:
    """Integers with thousands separators, fractions to two decimals, ``n/a`` for nothing measured."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


#: How each reduction metric is written for a person.
METRIC_NAMES = {"macs": "MACs", "params": "params"}


def pct(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{100 * fraction:.2f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(fmt(v) if not isinstance(v, str) else v for v in row) + " |" for row in rows]


def _change(before: float | None, after: float | None) -> str:
    if before is None or after is None or before == 0:
        return "n/a"
    return f"{100 * (after - before) / before:+.2f}%"


def summary(run: RunRecord) -> list[str]:
    b, a = run.metrics["before"], run.metrics["after"]
    rows = [
        ["params", b["params"], a["params"], _change(b["params"], a["params"]), "`before.params`, `after.params`"],
        ["MACs", b["macs"], a["macs"], _change(b["macs"], a["macs"]), "`before.macs`, `after.macs`"],
    ]
    if "sparse_macs" in a:
        rows.append(
            [
                "kernel-sparse MACs",
                b["sparse_macs"],
                a["sparse_macs"],
                _change(b["sparse_macs"], a["sparse_macs"]),
                "`before.sparse_macs`, `after.sparse_macs`",
            ]
        )
    top1_change = "n/a" if None in (b["top1"], a["top1"]) else f"{a['top1'] - b['top1']:+.2f} pt"
    rows.append(["test top-1 (%)", b["top1"], a["top1"], top1_change, "`before.top1`, `after.top1`"])
    lat_b, lat_a = b.get("latency_ms") or {}, a.get("latency_ms") or {}
    for n in (k for k in lat_b if k in lat_a):
        s = run.speedup(n)
        rows.append(
            [
                f"latency b{n} (ms)",
                lat_b[n],
                lat_a[n],
                "n/a" if s is None else f"{s:.2f}x speed-up",
                f"`before.latency_ms.{n}`, `after.latency_ms.{n}`"
                + (f", `latency.batches.{n}.ratio`" if run.metrics.get("latency") else ""),
            ]
        )
    m = run.metrics
    target = "no target (the method's own threshold)" if m["target"] is None else f"target {pct(m['target'])}%"
    lines = table(["quantity", "before", "after", "change", "metrics.json keys"], rows)
    metric = METRIC_NAMES.get(m["metric"], m["metric"])
    lines += ["", f"{metric} reduction achieved: {pct(m['achieved'])}% ({target}; `achieved`, `target`)."]
    return lines + _latency_lines(run, bool(lat_b and lat_a))


def _latency_lines(run: RunRecord, measured: bool) -> list[str]:
    if not measured:
        return ["", "Latency was not measured in this run (`latency: false`)."]
    c = run.metrics.get("latency") or {}
    how = (
        f"timed interleaved on {c['device']} with {c['threads']} thread(s)"
        if c
        else "timed before and after, one after the other"
    )
    lines = ["", f"Latency: median milliseconds per batch, {how}."]
    if (c.get("load") or {}).get("busy"):
        lines.append(
            "**Measured on a busy machine** (`latency.load.busy`): other processes used "
            f"{c['load']['others_cores']:.1f} of {c['load']['cpu_count']} cores while it was timed."
        )
    caveat = run.latency_caveat()
    if caveat:
        lines.append(f"**The speed-ups are unreliable** (`latency.reliable` is false): {caveat}.")
    return lines


def rounds(run: RunRecord) -> list[str]:
    rows = [
        [
            r["round"],
            pct(r["target"]),
            pct(r["achieved"]),
            r["channels_removed"],
            r.get("top1_after_cut", r["top1_after_pruning"]),
            r.get("top1_after_recalibration"),
            r["top1_after_finetune"],
            r["finetune_epochs"],
            r["scoring_s"],
            r["finetune_s"],
        ]
        for r in run.metrics.get("rounds", [])
    ]
    headers = [
        "round",
        "target (%)",
        "achieved (%)",
        "channels removed",
        "top-1 after cut (%)",
        "top-1 after BN recalibration (%)",
        "top-1 after fine-tuning (%)",
        "fine-tuning epochs",
        "scoring (s)",
        "fine-tuning (s)",
    ]
    return table(headers, rows) + [
        "",
        "From `rounds[]` (`target`, `achieved`, `channels_removed`, "
        "`top1_after_cut`, `top1_after_recalibration`, `top1_after_finetune`, "
        "`finetune_epochs`, `scoring_s`, `finetune_s`).",
    ]


def accuracy(run: RunRecord) -> list[str]:
    points = top1_trajectory(run)
    return table(["step", "test top-1 (%)", "read from"], [[p.label, p.top1, f"`{p.source}`"] for p in points]) + [
        "",
        f"`cut`: right after the round's cut; `BN`: after BN recalibration; `eN`: after fine-tuning epoch N "
        f"(`finetune-<round>/{EPOCHS_FILE}`); `final`: after the method's final step.",
    ]


def _per_layer(before: dict[str, int], after: dict[str, int]) -> list[list[Any]]:
    return [
        [f"`{name}`", n, after.get(name), "n/a" if not n or name not in after else f"{100 * after[name] / n:.1f}"]
        for name, n in before.items()
    ]


def channels(run: RunRecord) -> list[str]:
    m = run.metrics
    return table(["layer", "before", "after", "kept (%)"], _per_layer(m["channels_before"], m["channels_after"])) + [
        "",
        "Output channels of every conv and linear layer: `channels_before`, `channels_after`.",
    ]


def kernels(run: RunRecord) -> list[str]:
    if not run.kernel_level:
        return []
    before, after = run.metrics["before"].get("kernels"), run.metrics["after"].get("kernels")
    if not before or not after:
        return [
            "This run's metrics.json does not record kernels per layer (`before.kernels`, `after.kernels`); "
            "runs made with this version do."
        ]
    return table(["layer", "before", "after", "kept (%)"], _per_layer(before, after)) + [
        "",
        "Kernels (input-output channel pairs with any non-zero weight) of every conv: `before.kernels`, "
        "`after.kernels`.",
    ]


def timing(run: RunRecord) -> list[str]:
    t = run.metrics["timing_s"]
    return table(
        ["scoring (s)", "surgery (s)", "fine-tuning (s)", "total (s)"],
        [[t["scoring"], t["surgery"], t["finetune"], t["total"]]],
    ) + ["", "From `timing_s`."]


def notes(run: RunRecord) -> list[str]:
    return [f"- {n}" for n in run.metrics.get("notes", [])]


#: (title, section) in report order; a section with no lines is left out.
SECTIONS: list[tuple[str, Callable[[RunRecord], list[str]]]] = [
    ("Summary", summary),
    ("Rounds", rounds),
    ("Test top-1 through the run", accuracy),
    ("Channels per layer", channels),
    ("Kernels per layer", kernels),
    ("Time", timing),
    ("Notes", notes),
]


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """The same table for a terminal: columns padded, numbers right-aligned."""
    cells = [list(headers)] + [[fmt(v) if not isinstance(v, str) else v for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in cells
    ]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])
