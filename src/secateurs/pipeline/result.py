"""What a pruning run measured: one record per round and the whole-run result."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RoundRecord:
    round: int
    target: float  # cumulative reduction aimed at after this round, vs the unpruned model
    achieved: float
    channels_removed: int
    top1_after_pruning: float | None
    top1_after_finetune: float | None
    finetune_epochs: int
    scoring_s: float
    surgery_s: float
    finetune_s: float
    note: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # method-specific (e.g. probability's cases)


@dataclass
class PruneResult:
    """What a pruning run measured; ``metrics.json`` in the run directory is ``to_dict()``."""

    method: str
    metric: str
    target: float | None  # None: the method ran on its own threshold
    achieved: float  # the reduction of ``metric``, measured on the pruned model
    before: dict[str, Any]
    after: dict[str, Any]
    rounds: list[RoundRecord]
    channels_before: dict[str, int]
    channels_after: dict[str, int]
    timing_s: dict[str, float]
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    #: What the method's finalize step did (hnsi: the materialisation: dense and kernel-sparse
    #: MACs before/after it, input channels removed per layer, filters folded, exactness).
    finalized: dict[str, Any] = field(default_factory=dict)

    @property
    def within_tolerance(self) -> bool | None:
        return None if self.target is None else abs(self.achieved - self.target) <= 0.01

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["within_tolerance"] = self.within_tolerance
        return d

    def summary(self) -> str:
        b, a = self.before, self.after
        aim = "no target" if self.target is None else f"target {100 * self.target:.1f}%"
        lines = [f"{self.method}: {self.metric} reduction {100 * self.achieved:.2f}% ({aim})",
                 f"  params {b['params']:,} -> {a['params']:,}   MACs {b['macs']:,} -> {a['macs']:,}"]
        if "sparse_macs" in a:
            lines.append(f"  kernel-sparse MACs {b['sparse_macs']:,} -> {a['sparse_macs']:,} (MACs above: dense, "
                         "after materialisation)")
        start = f"{b['top1']:.2f}% -> " if b.get("top1") is not None else ""
        if a.get("top1") is not None and not any(r.finetune_epochs for r in self.rounds):
            lines.append(f"  top-1 {start}{a['top1']:.2f}% (no fine-tuning)")
        elif a.get("top1") is not None:
            lines.append(f"  top-1 {start}{self.rounds[-1].top1_after_pruning:.2f}% right after pruning -> "
                         f"{a['top1']:.2f}% after fine-tuning")
        lat_b, lat_a = b.get("latency_ms"), a.get("latency_ms")
        if lat_b and lat_a:
            lines.append("  latency " + ", ".join(f"b{k} {lat_b[k]:.2f} -> {lat_a[k]:.2f} ms ({lat_b[k] / lat_a[k]:.2f}x)"
                                                  for k in lat_b if k in lat_a))
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)
