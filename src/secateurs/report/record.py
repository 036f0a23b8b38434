"""A pruning run directory, read back: what the report and the comparison are made of.

Everything a report shows comes from files the run wrote, never from a recomputation:
``metrics.json`` (the :class:`~secateurs.pipeline.PruneResult`), ``config.json`` (the
resolved configuration) and ``finetune-<round>/metrics.jsonl`` (one line per fine-tuning
epoch). Each figure names the keys it shows, so a reader can check it against the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"
EPOCHS_FILE = "metrics.jsonl"


@dataclass
class RunRecord:
    """One pruning run as its files hold it.

    Attributes:
        path: the run directory.
        metrics: ``metrics.json``.
        config: ``config.json``, or empty when the run has none (a run made with the Python API).
        epochs: per round with fine-tuning, the lines of ``finetune-<round>/metrics.jsonl``.
    """

    path: Path
    metrics: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    epochs: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name or str(self.path)

    @property
    def kernel_level(self) -> bool:
        """The run counted kernel-sparse MACs: a kernel method (hnsi)."""
        return "sparse_macs" in self.metrics.get("after", {})

    def speedup(self, batch: str) -> float | None:
        """Median latency before over after at ``batch``: the interleaved comparison's ratio
        when the run has one (``latency.batches.<b>.ratio``), else the ratio of the two
        medians (``before.latency_ms`` / ``after.latency_ms``)."""
        comparison = (self.metrics.get("latency") or {}).get("batches", {}).get(batch)
        if comparison is not None:
            return float(comparison["ratio"])
        before = self.metrics.get("before", {}).get("latency_ms") or {}
        after = self.metrics.get("after", {}).get("latency_ms") or {}
        if batch in before and batch in after and after[batch] > 0:
            return before[batch] / after[batch]
        return None

    def latency_caveat(self) -> str | None:
        """Why the speed-ups should not be trusted, in words (``latency.reasons``, including
        a busy machine, ``latency.load.busy``); None when the run records no doubt."""
        c = self.metrics.get("latency")
        if not c or c.get("reliable", True):
            return None
        return "; ".join(c.get("reasons") or ["the comparison marked itself unreliable"])

    def last_round(self) -> dict[str, Any]:
        return (self.metrics.get("rounds") or [{}])[-1]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{str(path)!r} is not valid JSON ({e}); the run did not finish writing it, so "
            "run the prune again (or resume it with --resume)"
        ) from None


def _read_epochs(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by an interruption: the epochs before it stand
    return rows


def load_run(run_dir: str | Path) -> RunRecord:
    """Read a finished pruning run.

    Raises:
        ConfigError: ``run_dir`` holds no ``metrics.json`` (not a run, or one that did not finish).
    """
    path = Path(run_dir)
    metrics_path = path / METRICS_FILE
    if not metrics_path.is_file():
        why = "does not exist" if not path.exists() else f"holds no {METRICS_FILE}"
        raise ConfigError(
            f"{str(path)!r} {why}: a report is built from a finished pruning run directory (the "
            "--out of `secateurs prune`); finish the run first, e.g. with `secateurs prune --resume`"
        )
    config_path = path / CONFIG_FILE
    config = _read_json(config_path) if config_path.is_file() else {}
    metrics = _read_json(metrics_path)
    epochs = {}
    for r in (rec.get("round") for rec in metrics.get("rounds", [])):
        jsonl = path / f"finetune-{r}" / EPOCHS_FILE
        if jsonl.is_file():
            epochs[r] = _read_epochs(jsonl)
    return RunRecord(path, metrics, config, epochs)


@dataclass(frozen=True)
class Point:
    """One test top-1 measurement along the run, with the key it was read from."""

    label: str
    top1: float
    source: str


def top1_trajectory(record: RunRecord) -> list[Point]:
    """Test top-1 in the order it was measured: before, then per round after the cut, after
    BN recalibration and after each fine-tuning epoch, then after the method's final step
    (hnsi's materialisation) when it had one. Values the run did not measure are skipped."""
    m = record.metrics
    points = [Point("before", m["before"]["top1"], "before.top1")]
    for i, rnd in enumerate(m.get("rounds", [])):
        r = rnd["round"]
        cut = rnd.get("top1_after_cut", rnd.get("top1_after_pruning"))
        key = "top1_after_cut" if "top1_after_cut" in rnd else "top1_after_pruning"
        points.append(Point(f"r{r} cut", cut, f"rounds[{i}].{key}"))
        points.append(Point(f"r{r} BN", rnd.get("top1_after_recalibration"), f"rounds[{i}].top1_after_recalibration"))
        rows = [row for row in record.epochs.get(r, []) if row.get("test_top1") is not None]
        points += [
            Point(f"r{r} e{row['epoch']}", row["test_top1"], f"finetune-{r}/{EPOCHS_FILE} line {k + 1} test_top1")
            for k, row in enumerate(rows)
        ]
        if not rows and rnd.get("finetune_epochs"):
            points.append(Point(f"r{r} tuned", rnd.get("top1_after_finetune"), f"rounds[{i}].top1_after_finetune"))
    if m.get("finalized"):
        points.append(Point("final", m["after"]["top1"], "after.top1"))
    return [p for p in points if p.top1 is not None]
