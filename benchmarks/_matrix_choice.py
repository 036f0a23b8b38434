"""The report's answer to "which method should I use?", from the matrix's results alone.

Per model and MACs budget, among the variants fine-tuned with the whole budget and run on at
least :data:`_matrix_claims.MIN_SEEDS` seeds (fewer cannot be tested, so they are listed
apart, never ranked): the one with the best mean final top-1, the others whose gap to it is
not significant (twice the combined standard error, :func:`_matrix_claims.difference`: with
the seeds run they cannot be told apart from the best, so a user may pick among them by the
b64 speed-up shown beside each), and those significantly below it. hnsi's target counts
kernel-sparse MACs, so at the same "macs50" its dense model does more work: its entries are
marked. Each row also says whether the best run got the unpruned model's top-1 back, which
is the protocol's test that the fine-tuning budget is long enough (issue 12: the best method
at 50% recovers the baseline).
"""

from __future__ import annotations

import math
from typing import Any

from _matrix_claims import MIN_SEEDS, Stat, difference
from _matrix_spec import KERNEL_LEVEL, VARIANTS

HEADERS = [
    "model",
    "target",
    "seeds",
    "best final top-1",
    "tied with it",
    "significantly below it",
    f"too few seeds to rank (< {MIN_SEEDS})",
    "best - unpruned: recovered?",
]
#: Marks a variant whose MACs target is kernel-sparse (its dense MACs are higher).
SPARSE_MARK = "†"


def _full_budget(variant: str) -> bool:
    spec = VARIANTS.get(variant)
    return spec is not None and spec.finetune != "none" and spec.epochs_share == 1.0


def recovered(best: Stat, baseline_top1: float) -> str:
    """Whether ``best`` got the baseline back: its mean is within two standard errors below
    the unpruned top-1, or above it. Below :data:`MIN_SEEDS` seeds only the gap is given."""
    gap = best.mean - baseline_top1
    if best.std is None or best.n < MIN_SEEDS:
        return f"{gap:+.2f} (n={best.n}: too few seeds)"
    se = best.std / math.sqrt(best.n)
    return f"{gap:+.2f}: " + ("yes" if gap >= -2 * se else f"no (2SE {2 * se:.2f})")


def _entry(variant: str, value: str, speedup: Stat | None) -> str:
    """``variant (value, b64 speed-up)``, marked when its target counts kernel-sparse MACs."""
    mark = SPARSE_MARK if variant in KERNEL_LEVEL else ""
    speed = "" if speedup is None else f", {speedup.mean:.2f}x"
    return f"`{variant}`{mark} ({value}{speed})"


def choice_rows(groups: dict[tuple[str, str, str], list[dict[str, Any]]]) -> tuple[list[list[str]], str]:
    """Rows under :data:`HEADERS` and a one-line summary. Each entry reads
    ``variant (mean final top-1, b64 speed-up)``."""
    rows: list[list[str]] = []
    for model, target in sorted({(m, t) for m, t, _ in groups}):
        runs_of = {v: rs for (m, t, v), rs in groups.items() if m == model and t == target and _full_budget(v)}
        stats = {v: s for v, rs in runs_of.items() if (s := Stat.of([r["top1"] for r in rs]))}
        if not stats:
            continue
        speed = {v: Stat.of([r.get("speedup_b64") for r in runs_of[v]]) for v in stats}
        ranked = {v: s for v, s in stats.items() if s.n >= MIN_SEEDS}
        few = sorted((v for v in stats if v not in ranked), key=lambda v: -stats[v].mean)
        few_text = ", ".join(_entry(v, f"{stats[v].mean:.2f}, n={stats[v].n}", speed[v]) for v in few) or "none"
        baseline = next(rs[0]["baseline"]["top1"] for rs in runs_of.values())
        seeds = sorted({r["seed"] for rs in runs_of.values() for r in rs})
        if not ranked:
            rows.append([model, target, ", ".join(map(str, seeds)), "none ranked yet", "-", "-", few_text, "-"])
            continue
        best = max(ranked, key=lambda v: ranked[v].mean)
        others = sorted((v for v in ranked if v != best), key=lambda v: -ranked[v].mean)
        below = [v for v in others if difference(ranked[best], ranked[v]).significant]
        tied = [v for v in others if v not in below]
        rows.append(
            [
                model,
                target,
                ", ".join(map(str, seeds)),
                _entry(best, ranked[best].text(), speed[best]),
                ", ".join(_entry(v, f"{ranked[v].mean:.2f}", speed[v]) for v in tied) or "none",
                ", ".join(_entry(v, f"{ranked[v].mean:.2f}", speed[v]) for v in below) or "none",
                few_text,
                recovered(ranked[best], baseline),
            ]
        )
    summary = (
        f"{len(rows)} model/budget pair(s) with fine-tuned runs. Each entry: mean final top-1 and b64 "
        f"speed-up over the unpruned model. *Tied*: not significantly below the best with the seeds run "
        f"(more seeds may separate them). {SPARSE_MARK}: the target counts kernel-sparse MACs, so its dense "
        "model does more work than the others at the same target (see its MACs column below)."
    )
    return rows, summary
