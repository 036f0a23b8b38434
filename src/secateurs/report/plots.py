"""The report's PNG figures, drawn with matplotlib when it is installed.

matplotlib is an optional dependency (the ``plots`` extra): without it a report is still
written, with the tables, and says how to get the figures. Figures are drawn on a bare
:class:`matplotlib.figure.Figure` (no pyplot), so drawing never touches the caller's
backend or open figures. Each plot is one :class:`Plot` in :data:`RUN_PLOTS`, naming the
keys it reads, which the report prints under it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._atomic import atomic_write
from .record import EPOCHS_FILE, RunRecord, top1_trajectory

INSTALL_HINT = "pip install 'secateurs[plots]' (from a checkout: pip install -e '.[plots]')"


def plots_unavailable() -> str | None:
    """Why no figures can be drawn, with the way out; None when matplotlib is there."""
    if importlib.util.find_spec("matplotlib") is None:
        return f"matplotlib is not installed, so this report has no figures; {INSTALL_HINT}, then rebuild it"
    return None


def new_figure(width: float, height: float = 4.0) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save_png(fig: Any, path: Path) -> Path:
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


@dataclass(frozen=True)
class Plot:
    """One figure of a run's report.

    Attributes:
        file: its file name in the run directory.
        title: the caption.
        source: the keys it shows, for the reader to check it against.
        applies: whether the run has what it shows.
        draw: fills the figure.
        per_layer: one bar group per layer, so the figure widens with the layer count.
    """

    file: str
    title: str
    source: str
    applies: Callable[[RunRecord], bool]
    draw: Callable[[Any, RunRecord], None]
    per_layer: bool = False


def _bars(fig: Any, names: list[str], before: list[int], after: list[int], ylabel: str) -> None:
    ax = fig.add_subplot()
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], before, width=0.4, label="before", color="#9bb7d4")
    ax.bar([i + 0.2 for i in x], after, width=0.4, label="after", color="#1f4e79")
    ax.set_xticks(list(x), names, rotation=90, fontsize=7)
    ax.set_ylabel(ylabel)
    ax.legend()


def _channels(fig: Any, run: RunRecord) -> None:
    before, after = run.metrics["channels_before"], run.metrics["channels_after"]
    names = list(before)
    _bars(fig, names, [before[n] for n in names], [after.get(n, 0) for n in names], "output channels")


def _kernels(fig: Any, run: RunRecord) -> None:
    before, after = run.metrics["before"]["kernels"], run.metrics["after"]["kernels"]
    names = list(before)
    _bars(fig, names, [before[n] for n in names], [after.get(n, 0) for n in names], "kernels kept")


def _top1(fig: Any, run: RunRecord) -> None:
    points = top1_trajectory(run)
    ax = fig.add_subplot()
    ax.plot(range(len(points)), [p.top1 for p in points], marker="o", color="#1f4e79")
    ax.set_xticks(range(len(points)), [p.label for p in points], rotation=45, fontsize=8)
    ax.set_ylabel("test top-1 (%)")
    ax.grid(alpha=0.3)


RUN_PLOTS: list[Plot] = [
    Plot(
        "report-channels.png",
        "Output channels per layer, before and after pruning",
        "metrics.json `channels_before`, `channels_after`",
        lambda run: True,
        _channels,
        per_layer=True,
    ),
    Plot(
        "report-top1.png",
        "Test top-1 across rounds and fine-tuning epochs",
        f"metrics.json `before.top1`, `rounds[].top1_after_cut`, `rounds[].top1_after_recalibration`, "
        f"`rounds[].top1_after_finetune`, `after.top1`; `finetune-<round>/{EPOCHS_FILE}` `test_top1`",
        lambda run: len(top1_trajectory(run)) > 1,
        _top1,
    ),
    Plot(
        "report-kernels.png",
        "Kernels kept per layer (kernel pruning)",
        "metrics.json `before.kernels`, `after.kernels`",
        lambda run: run.kernel_level and bool(run.metrics["before"].get("kernels")),
        _kernels,
        per_layer=True,
    ),
]


def draw_run_plots(run: RunRecord) -> list[Plot]:
    """Draw every plot that applies into the run directory; the ones drawn."""
    drawn = []
    for plot in RUN_PLOTS:
        if plot.applies(run):
            layers = len(run.metrics["channels_before"])
            fig = new_figure(max(6.0, 0.3 * layers) if plot.per_layer else 7.0)
            fig.suptitle(plot.title)
            plot.draw(fig, run)
            save_png(fig, run.path / plot.file)
            drawn.append(plot)
    return drawn
