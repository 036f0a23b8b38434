"""The report's answer to "which method should I use?", from the matrix's results alone.

Per model and MACs budget, among the variants fine-tuned with the whole budget: the one with
the best mean final top-1, and every other variant whose gap to it is not significant (twice
the combined standard error, :func:`_matrix_claims.difference`): with the seeds run, those
cannot be told apart from the best, so a user may pick among them by speed-up or by cost.
Each row also says whether the best run got the unpruned model's top-1 back, which is the
protocol's test that the fine-tuning budget is long enough (issue 12: the best method at 50%
recovers the baseline).
"""

from __future__ import annotations

import math
from typing import Any

from _matrix_claims import Stat, difference
from _matrix_spec import VARIANTS


def _full_budget(variant: str) -> bool:
    spec = VARIANTS.get(variant)
    return spec is not None and spec.finetune != "none" and spec.epochs_share == 1.0


def recovered(best: Stat, baseline_top1: float) -> str:
    """Whether ``best`` got the baseline back: its mean is within two standard errors below
    the unpruned top-1, or above it. One seed has no standard error: only the gap is given."""
    gap = best.mean - baseline_top1
    if best.std is None:
        return f"{gap:+.2f} (one seed)"
    se = best.std / math.sqrt(best.n)
    return f"{gap:+.2f}: " + ("yes" if gap >= -2 * se else f"no (2SE {2 * se:.2f})")


def choice_rows(groups: dict[tuple[str, str, str], list[dict[str, Any]]]) -> tuple[list[list[str]], str]:
    """Rows ``[model, target, seeds, best (mean ± std), tied with it, baseline recovered?]``
    and a one-line summary."""
    rows: list[list[str]] = []
    for model, target in sorted({(m, t) for m, t, _ in groups}):
        stats = {
            v: s
            for (m, t, v), runs in groups.items()
            if m == model and t == target and _full_budget(v) and (s := Stat.of([r["top1"] for r in runs]))
        }
        if not stats:
            continue
        best = max(stats, key=lambda v: stats[v].mean)
        tied = sorted(
            (v for v, s in stats.items() if v != best and not difference(stats[best], s).significant),
            key=lambda v: -stats[v].mean,
        )
        baseline = next(rs[0]["baseline"]["top1"] for (m, t, _), rs in groups.items() if m == model and t == target)
        seeds = sorted({r["seed"] for (m, t, v), rs in groups.items() if m == model and t == target for r in rs})
        rows.append(
            [
                model,
                target,
                ", ".join(map(str, seeds)),
                f"`{best}` ({stats[best].text()})",
                ", ".join(f"`{v}` ({stats[v].mean:.2f})" for v in tied) or "none",
                recovered(stats[best], baseline),
            ]
        )
    summary = (
        f"{len(rows)} model/budget pair(s) with fine-tuned runs. *Tied*: not significantly below the best "
        "with the seeds run (more seeds may separate them)."
    )
    return rows, summary
