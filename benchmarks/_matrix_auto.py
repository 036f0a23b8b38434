"""How often ``auto``'s pick is the method that ends best after fine-tuning, and its cost.

``auto`` chooses among one-shot cuts before fine-tuning; the matrix fine-tunes every method
with the same budget, so for each seed the pick can be checked against the finals of the
candidates' own one-round variants on that seed:

* ``no``: some candidate's run ends above the pick's (known as soon as both runs are there);
* ``yes``: every candidate that auto scored has a run on the seed, and the pick's is the best;
* ``not comparable``: the pick has no run on the seed, or a candidate that might have beaten
  it has none yet (``fpgm``, ``l2`` and ``probability`` have no one-round variant in the
  matrix, which is why the matrix's ``auto`` offers only the five that do).
"""

from __future__ import annotations

from typing import Any

#: auto's candidate -> the matrix variant that runs it alone in one round with tft.
ONE_ROUND = {"l1": "l1", "l1-capped": "l1-capped-1r", "fcs": "fcs", "feature-l1": "feature-l1", "bn-scale": "bn-scale"}


def _finals(groups: dict, model: str, target: str, seed: int) -> dict[str, float]:
    """Each candidate's final top-1 on ``seed`` from its one-round variant, where the run is there."""
    return {
        method: r["top1"]
        for method, variant in ONE_ROUND.items()
        for r in groups.get((model, target, variant), [])
        if r["seed"] == seed and r.get("top1") is not None
    }


def verdict(chosen: str, scored: list[str], finals: dict[str, float]) -> str:
    """``yes`` / ``no`` / ``not comparable`` for one auto run (see the module docstring)."""
    if chosen not in finals:
        return "not comparable"
    if any(top1 > finals[chosen] for top1 in finals.values()):
        return "no"
    return "yes" if all(m in finals for m in scored) else "not comparable"


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
            scored = [m for m, c in scores.items() if "holdout_top1" in c]  # refused candidates do not count
            finals = _finals(groups, model, target, r["seed"])
            hit = verdict(chosen, scored, finals)
            if hit != "not comparable":
                comparable += 1
                hits += hit == "yes"
            best = max(finals.items(), key=lambda x: x[1]) if finals else None
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
