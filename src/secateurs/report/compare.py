"""Several pruning runs side by side: one table and one accuracy-vs-MACs figure.

The table's columns are :data:`COLUMNS`, each naming the ``metrics.json`` key it reads,
so ``secateurs report A B --out DIR`` and ``secateurs demo`` print the same figures the
runs recorded, and the comparison says where each comes from.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._atomic import atomic_write_text
from ..errors import ConfigError
from .plots import new_figure, plots_unavailable, save_png
from .record import RunRecord, load_run
from .tables import table

COMPARISON_FILE = "comparison.md"
COMPARISON_PLOT = "comparison-top1-macs.png"


@dataclass(frozen=True)
class Column:
    header: str
    source: str  # the metrics.json keys it shows
    value: Callable[[RunRecord], Any]


def _cut(run: RunRecord) -> float | None:
    last = run.last_round()
    return last.get("top1_after_cut", last.get("top1_after_pruning"))


def _speedup(batch: str) -> Column:
    def value(run: RunRecord) -> str:
        s = run.speedup(batch)
        return "n/a" if s is None else f"{s:.2f}x" + ("" if run.latency_caveat() is None else " (unreliable)")

    return Column(
        f"speed-up b{batch}",
        f"`latency.batches.{batch}.ratio` (else `before.latency_ms.{batch}` / `after.latency_ms.{batch}`)",
        value,
    )


COLUMNS: list[Column] = [
    Column("run", "the run directory's name", lambda run: run.name),
    Column("method", "`method`", lambda run: run.metrics["method"]),
    Column("reduction %", "`achieved` (of `metric`)", lambda run: f"{100 * run.metrics['achieved']:.2f}"),
    Column("params", "`after.params`", lambda run: run.metrics["after"]["params"]),
    Column("MACs", "`after.macs`", lambda run: run.metrics["after"]["macs"]),
    Column("top-1 before", "`before.top1`", lambda run: run.metrics["before"]["top1"]),
    Column("after cut", "`rounds[-1].top1_after_cut`", _cut),
    Column(
        "after BN recal.",
        "`rounds[-1].top1_after_recalibration`",
        lambda run: run.last_round().get("top1_after_recalibration"),
    ),
    Column("after fine-tuning", "`after.top1`", lambda run: run.metrics["after"]["top1"]),
]
#: Shown when a kernel method is among the runs: MACs counts every kernel of the convs that
#: remain, kernel-sparse MACs only those with non-zero weights (what hnsi's target is on).
SPARSE_MACS = Column("kernel-sparse MACs", "`after.sparse_macs`", lambda run: run.metrics["after"].get("sparse_macs"))
TIME = Column("time (s)", "`timing_s.total`", lambda run: run.metrics["timing_s"]["total"])


def columns_for(runs: Sequence[RunRecord]) -> list[Column]:
    """:data:`COLUMNS`, one speed-up column per batch size any run timed, and the time."""
    batches = sorted({b for run in runs for b in (run.metrics["after"].get("latency_ms") or {})}, key=int)
    sparse = [SPARSE_MACS] if any(run.kernel_level for run in runs) else []
    return COLUMNS[:5] + sparse + COLUMNS[5:] + [_speedup(b) for b in batches] + [TIME]


def comparison_rows(runs: Sequence[RunRecord]) -> tuple[list[str], list[list[Any]]]:
    cols = columns_for(runs)
    return [c.header for c in cols], [[c.value(run) for c in cols] for run in runs]


def comparison_text(runs: Sequence[RunRecord], out: Path, figure: bool, missing: str | None) -> str:
    headers, rows = comparison_rows(runs)
    lines = (
        [f"# Comparison of {len(runs)} pruning runs", ""]
        + table(headers, rows)
        + [
            "",
            "Test top-1 in %: before pruning, right after the (last) cut, after the BN recalibration that follows "
            "it, and at the end. Where each column comes from (each run's metrics.json):",
            "",
        ]
    )
    lines += [f"- {c.header}: {c.source}" for c in columns_for(runs)]
    caveats = [f"- {run.name}: {run.latency_caveat()}" for run in runs if run.latency_caveat()]
    if caveats:
        lines += ["", "Speed-ups marked unreliable, and why (`latency.reasons`):", "", *caveats]
    lines += ["", "## Test top-1 against MACs", ""]
    if figure:
        lines += [
            f"![test top-1 against MACs]({COMPARISON_PLOT})",
            "",
            "After pruning (`after.macs`, `after.top1`, one point per run) and the unpruned models "
            "(`before.macs`, `before.top1`). MACs are dense: every kernel of the layers that remain, as the "
            "model runs; a kernel method's kernel-sparse MACs are in the table.",
        ]
    else:
        lines.append(f"No figure: {missing}.")
    reports = [(run.name, run.path / "report.md") for run in runs if (run.path / "report.md").is_file()]
    if reports:
        lines += ["", "## Each run's report", ""]
        lines += [f"- [{name}]({os.path.relpath(path, out)})" for name, path in reports]
    return "\n".join(lines) + "\n"


def _draw(runs: Sequence[RunRecord], path: Path) -> None:
    fig = new_figure(7.0, 4.5)
    ax = fig.add_subplot()
    baselines = {(run.metrics["before"]["macs"], run.metrics["before"]["top1"]) for run in runs}
    for macs, top1 in baselines:
        if top1 is not None:
            ax.scatter([macs / 1e6], [top1], marker="x", color="grey", label="unpruned")
    for run in runs:
        a = run.metrics["after"]
        if a["top1"] is not None:
            ax.scatter([a["macs"] / 1e6], [a["top1"]], color="#1f4e79")
            method = run.metrics["method"]
            label = run.name if run.name == method else f"{run.name} ({method})"
            ax.annotate(label, (a["macs"] / 1e6, a["top1"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles[:1], labels[:1])
    ax.set_xlabel("MACs per image (millions)")
    ax.set_ylabel("test top-1 (%)")
    ax.grid(alpha=0.3)
    fig.suptitle("Test top-1 against MACs")
    save_png(fig, path)


def write_comparison(run_dirs: Sequence[str | Path], out: str | Path, overwrite: bool = False) -> Path:
    """Write ``comparison.md`` (and its figure when matplotlib is installed) into ``out``.

    Refuses, before writing anything, to replace files it would write that are already
    there, unless ``overwrite`` (see :func:`secateurs.io.outdir.claim`).

    Returns:
        The path of ``comparison.md``.
    """
    from ..io.outdir import claim

    if len(run_dirs) < 2:
        raise ConfigError(f"a comparison needs at least two run directories, got {len(run_dirs)}")
    runs = [load_run(d) for d in run_dirs]
    names = [run.name for run in runs]
    if len(set(names)) < len(names):
        raise ConfigError(
            f"run directories {names} share a name, so the comparison could not tell them apart; "
            "give runs with distinct folder names"
        )
    out = Path(out)
    missing = plots_unavailable()
    claim([out / COMPARISON_FILE] + ([] if missing else [out / COMPARISON_PLOT]), overwrite=overwrite)
    if not missing:
        _draw(runs, out / COMPARISON_PLOT)
    return atomic_write_text(out / COMPARISON_FILE, comparison_text(runs, out, missing is None, missing))
