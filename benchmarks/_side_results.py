"""The report's "beside the matrix" section: the other committed results a user choosing a
method should read, each listed only when its file is there."""

from __future__ import annotations

from pathlib import Path

#: ``glob pattern in results/ -> what the file answers``, in the order the report lists them.
SIDE_RESULTS: dict[str, str] = {
    "cut_only_*.md": "if you cannot fine-tune: top-1 right after one cut and BN recalibration, per criterion, "
    "in global and in layer scope (`cut_only.py`)",
    "bn_recalibration.md": "how many calibration batches BN recalibration needs (`bn_recalibration.py`)",
    "probability_distribution_*.md": "where `probability` finds channels: P(y <= 0) per BN layer type, epoch by "
    "epoch of a baseline's training (`probability_distribution.py`)",
    "probability_training.md": "weight decay and epochs against what `probability` removes (`probability_training.py`)",
    "l1_capped_widths.md": "where l1-capped's cuts land: the widths one cut and three cuts keep, with each "
    "round's scores on the current or the unpruned scale (`l1_capped_widths.py`)",
    "hnsi_structure.md": "how many input channels hnsi's high-level layers drop, and the dense MACs and latency "
    "that follow (`hnsi_structure.py`)",
    "finetune_modes_*.md": "mlft against tft: accuracy at fewer epochs, cost per step and where it goes (`finetune_modes.py`)",
    "engine_timing.md": "the engine's speed against Torch-Pruning (`engine_timing.py`)",
}


def side_results(results: Path) -> list[str]:
    """One markdown bullet per committed result file in ``results`` that the table above names."""
    lines = []
    for pattern, what in SIDE_RESULTS.items():
        for path in sorted(results.glob(pattern)):
            lines.append(f"- [`{path.name}`]({path.name}): {what}")
    return lines
