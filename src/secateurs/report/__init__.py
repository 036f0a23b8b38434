"""Reports a person reads: ``report.md`` and PNG figures for every pruning run, and a
comparison of several runs.

``secateurs prune`` writes a run's report at its end; ``secateurs report RUN_DIR`` rebuilds
it from the run's files, and ``secateurs report A B ... --out DIR`` compares runs. Every
number is read from what the run recorded (:mod:`.record`), and every table and figure
names the ``metrics.json`` keys it shows.
"""

from __future__ import annotations

from pathlib import Path

from .._atomic import atomic_write_text
from .compare import COLUMNS, COMPARISON_FILE, COMPARISON_PLOT, comparison_rows, write_comparison
from .plots import RUN_PLOTS, Plot, draw_run_plots, plots_unavailable
from .record import RunRecord, load_run, top1_trajectory
from .tables import METRIC_NAMES, SECTIONS, pct, text_table

REPORT_FILE = "report.md"


def report_files() -> list[str]:
    """The names of every file a run's report may write into the run directory, for a
    command to claim before it runs (see :func:`secateurs.io.outdir.claim`)."""
    return [REPORT_FILE] + [plot.file for plot in RUN_PLOTS]


def _header(run: RunRecord) -> list[str]:
    m, c = run.metrics, run.config
    metric = METRIC_NAMES.get(m["metric"], m["metric"])
    target = "its own threshold" if m["target"] is None else f"a {metric} reduction of {pct(m['target'])}%"
    lines = [f"# Pruning report: {run.name}", "", f"- method: `{m['method']}`, aiming at {target}"]
    if c:
        tuning = c.get("finetune") or "none"
        lines += [
            f"- pruned checkpoint: `{c.get('checkpoint')}`; dataset: `{c.get('dataset')}`",
            f"- {c.get('rounds')} round(s); fine-tuning `{tuning}`, epochs per round "
            f"{c.get('epochs_per_round')}; BN recalibration batches: "
            f"{c.get('prune', {}).get('bn_recalibration', 'n/a')} (config.json)",
        ]
    return lines


def _figures(drawn: list[Plot], missing: str | None) -> list[str]:
    if missing:
        return [f"No figures: {missing}."]
    lines = []
    for plot in drawn:
        lines += [f"![{plot.title}]({plot.file})", "", f"*{plot.title}.* Source: {plot.source}.", ""]
    return lines[:-1]


def run_report_text(run: RunRecord, drawn: list[Plot], missing: str | None) -> str:
    """``report.md`` for ``run``, with ``drawn`` figures (or why there are none: ``missing``)."""
    lines = _header(run)
    for i, (title, section) in enumerate(SECTIONS):
        body = section(run)
        if body:
            lines += ["", f"## {title}", "", *body]
        if i == 0:
            lines += ["", "## Figures", "", *_figures(drawn, missing)]
    return "\n".join(lines) + "\n"


def write_run_report(run_dir: str | Path) -> Path:
    """Write (or rebuild) ``report.md`` and its figures in a finished pruning run directory.

    Only the report's own files are written: ``report.md`` and the figures of
    :data:`RUN_PLOTS`, which the run owns as it owns ``metrics.json``.

    Returns:
        The path of ``report.md``.
    """
    run = load_run(run_dir)
    missing = plots_unavailable()
    drawn = [] if missing else draw_run_plots(run)
    return atomic_write_text(run.path / REPORT_FILE, run_report_text(run, drawn, missing))


__all__ = [
    "COLUMNS",
    "COMPARISON_FILE",
    "COMPARISON_PLOT",
    "REPORT_FILE",
    "RUN_PLOTS",
    "RunRecord",
    "comparison_rows",
    "load_run",
    "plots_unavailable",
    "report_files",
    "run_report_text",
    "text_table",
    "top1_trajectory",
    "write_comparison",
    "write_run_report",
]
