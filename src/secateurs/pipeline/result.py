"""What a pruning run measured: one record per round and the whole-run result."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..measure.compare import speedup_text
from ..methods import RoundOutcome


@dataclass
class RoundRecord:
    """One round, from its cut to its fine-tuning: made after the cut, saved in the run's
    progress, completed by fine-tuning, and written to ``metrics.json`` as it is."""

    round: int
    target: float | None  # cumulative reduction aimed at after this round, vs the unpruned model
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
    #: Test top-1 right after the cut, and after the BN recalibration that follows it (None when
    #: off); ``top1_after_pruning`` is the latter when on: the model fine-tuning starts from.
    top1_after_cut: float | None = None
    top1_after_recalibration: float | None = None
    recalibration_s: float = 0.0
    recalibration_batches: int = 0  # over all ranks; 0: off

    @classmethod
    def after_cut(
        cls,
        round: int,
        target: float | None,
        achieved: float,
        top1: float | None,
        outcome: RoundOutcome,
        timing: tuple[float, float],
        recalibration: dict[str, Any],
    ) -> RoundRecord:
        """The round's record once it is cut (and BN recalibrated); fine-tuning fills in the rest."""
        return cls(
            round=round,
            target=target,
            achieved=achieved,
            channels_removed=outcome.removed,
            top1_after_pruning=top1,
            top1_after_finetune=None,
            finetune_epochs=0,
            scoring_s=timing[0],
            surgery_s=timing[1],
            finetune_s=0.0,
            note=outcome.note,
            details=outcome.details,
            **recalibration,
        )


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
    #: Before and after timed interleaved (``LatencyComparison.to_dict()``: medians, spreads,
    #: ratios and whether they can be trusted), or None when latency was not measured.
    latency: dict[str, Any] | None = None

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
        lines = [
            f"{self.method}: {self.metric} reduction {100 * self.achieved:.2f}% ({aim})",
            f"  params {b['params']:,} -> {a['params']:,}   MACs {b['macs']:,} -> {a['macs']:,}",
        ]
        if "sparse_macs" in a:
            lines.append(
                f"  kernel-sparse MACs {b['sparse_macs']:,} -> {a['sparse_macs']:,} (MACs above: dense, "
                "after materialisation)"
            )
        start = f"{b['top1']:.2f}% -> " if b.get("top1") is not None else ""
        if a.get("top1") is not None and not any(r.finetune_epochs for r in self.rounds):
            lines.append(f"  top-1 {start}{a['top1']:.2f}% (no fine-tuning)")
        elif a.get("top1") is not None:
            lines.append(
                f"  top-1 {start}{self.rounds[-1].top1_after_pruning:.2f}% right after pruning -> "
                f"{a['top1']:.2f}% after fine-tuning"
            )
        taus = [f"{r.details['tau']:.6g}" for r in self.rounds if "tau" in r.details]
        if taus:  # probability's threshold: solved when there is a target, else the one given
            lines.append(f"  tau {', '.join(taus)} ({'solved for the target' if self.target is not None else 'given'})")
        if self.latency:
            lines += ["  latency " + line for line in latency_lines(self.latency)]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def latency_lines(c: dict[str, Any]) -> list[str]:
    """The interleaved comparison in words; a speed-up the comparison does not trust is
    printed with the reasons, never bare."""
    lines = [
        f"batch {n}: {b['a']['median_ms']:.2f} -> {b['b']['median_ms']:.2f} ms, "
        + speedup_text(b["ratio"], tuple(b["ratio_ci"]), c["reliable"])
        for n, b in c["batches"].items()
    ]
    lines.append(
        f"(medians, interleaved, {c['threads']} thread(s) on {c['device']}) "
        + ("" if c["reliable"] else "UNRELIABLE: " + "; ".join(c["reasons"]))
    )
    return lines
