"""How often ``auto``'s pick is the method that ends best after fine-tuning, and its cost.

``auto`` chooses among one-shot cuts before fine-tuning; the matrix fine-tunes every method
with the same budget, so for each seed the pick can be checked against the candidate whose
own one-round variant ends with the best top-1 on that seed. Candidates without a one-round
variant in the matrix (``fpgm``, ``l2``, ``probability``) can still be picked; the check
then reads "not comparable".
"""

from __future__ import annotations

from typing import Any

#: auto's candidate -> the matrix variant that runs it alone in one round with tft.
ONE_ROUND = {"l1": "l1", "l1-capped": "l1-capped-1r", "fcs": "fcs", "feature-l1": "feature-l1", "bn-scale": "bn-scale"}


def _best_on_seed(groups: dict, model: str, target: str, seed: int) -> tuple[str, float] | None:
    finals = [
        (method, r["top1"])
        for method, variant in ONE_ROUND.items()
        for r in groups.get((model, target, variant), [])
        if r["seed"] == seed and r.get("top1") is not None
    ]
    return max(finals, key=lambda x: x[1]) if finals else None


def auto_rows(groups: dict) -> tuple[list[list[str]], str]:
    """One row per auto run, and the summary sentence."""
    rows, hits, comparable = [], 0, 0
    for (model, target, variant), runs in sorted(groups.items()):
        if variant != "auto":
            continue
        for r in runs:
            auto: dict[str, Any] = (r.get("details") or {}).get("auto") or {}
            chosen = auto.get("chosen", "?")
            scores = {c["method"]: c for c in auto.get("candidates", [])}
            best = _best_on_seed(groups, model, target, r["seed"])
            if best is None or chosen not in ONE_ROUND:
                hit = "not comparable"
            else:
                comparable += 1
                hits += best[0] == chosen
                hit = "yes" if best[0] == chosen else "no"
            seconds = sum(c.get("seconds", 0.0) for c in scores.values())
            chosen_score = scores.get(chosen, {}).get("holdout_top1")
            rows.append(
                [
                    model,
                    target,
                    str(r["seed"]),
                    f"`{chosen}`" + ("" if chosen_score is None else f" ({chosen_score:.2f})"),
                    "n/a" if best is None else f"`{best[0]}` ({best[1]:.2f})",
                    hit,
                    f"{seconds:.0f}",
                    f"{r['top1']:.2f}" if r.get("top1") is not None else "n/a",
                ]
            )
    summary = (
        f"auto picked the candidate that ended best after fine-tuning in {hits} of {comparable} comparable runs."
        if comparable
        else "No auto run has a comparable set of one-round runs on the same seed yet."
    )
    return rows, summary
