"""The report's "which method?" table (benchmarks/_matrix_choice.py) against figures worked
out by hand: the best mean, the variants within twice the combined standard error of it,
and whether the best got the unpruned top-1 back."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(autouse=True)
def _benchmarks_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))


def _runs(variant: str, top1s: list[float], baseline: float = 92.0, speedup: float = 1.5) -> list[dict]:
    return [
        {"variant": variant, "seed": s, "top1": t, "baseline": {"top1": baseline}, "speedup_b64": speedup}
        for s, t in enumerate(top1s)
    ]


def test_best_tied_and_recovered_by_hand() -> None:
    from _matrix_choice import choice_rows

    key = ("resnet20", "macs50")
    groups = {
        (*key, "l1"): _runs("l1", [91.0, 91.4, 91.2]),  # mean 91.2, std 0.2
        (*key, "fcs"): _runs("fcs", [91.9, 92.1, 92.0]),  # mean 92.0, std 0.1: the best
        (*key, "random"): _runs("random", [89.0, 89.2, 89.4]),  # far below
        (*key, "fcs-mlft-half"): _runs("fcs-mlft-half", [95.0, 95.0, 95.0]),  # half budget: not ranked
        (*key, "l1-noft"): _runs("l1-noft", [99.0, 99.0, 99.0]),  # no fine-tuning: not ranked
    }
    rows, summary = choice_rows(groups)
    assert len(rows) == 1 and "1 model/budget" in summary
    model, target, seeds, best, tied, below, few, recovered = rows[0]
    assert (model, target, seeds) == ("resnet20", "macs50", "0, 1, 2")
    assert best == "`fcs` (92.00 ± 0.10, 1.50x)"
    # fcs - l1 = 0.8; 2SE = 2 * sqrt(0.1^2/3 + 0.2^2/3) = 0.258: significant, so l1 is not tied.
    assert 0.8 > 2 * math.sqrt(0.01 / 3 + 0.04 / 3)
    assert tied == "none" and below == "`l1` (91.20, 1.50x), `random` (89.20, 1.50x)" and few == "none"
    assert recovered == "+0.00: yes"


def test_a_close_second_is_tied_and_a_short_best_is_not_recovered() -> None:
    from _matrix_choice import choice_rows, recovered
    from _matrix_claims import Stat

    key = ("resnet56", "macs75")
    groups = {
        (*key, "l1"): _runs("l1", [90.0, 91.0, 92.0], baseline=93.0),  # mean 91.0, std 1.0
        (*key, "hnsi"): _runs("hnsi", [90.5, 90.7, 90.9], baseline=93.0),  # mean 90.7: within 2SE
    }
    rows, _ = choice_rows(groups)
    assert rows[0][3] == "`l1` (91.00 ± 1.00, 1.50x)" and rows[0][4] == "`hnsi`† (90.70, 1.50x)"
    # 91.0 - 93.0 = -2.0, 2SE = 2 * 1.0 / sqrt(3) = 1.155: not recovered.
    assert rows[0][7] == "-2.00: no (2SE 1.15)"
    assert recovered(Stat.of([92.5]), 93.0) == "-0.50 (n=1: too few seeds)"
    assert recovered(Stat.of([92.5, 93.5]), 93.0) == "+0.00 (n=2: too few seeds)"


def test_variants_with_fewer_than_three_seeds_are_listed_apart_never_ranked() -> None:
    """A one-seed 95.0 beats every mean here, yet it is not "best": one seed cannot be tested.
    With no variant at three seeds nothing is ranked and every variant is in the last column."""
    from _matrix_choice import choice_rows

    key = ("resnet20", "macs75")
    groups = {
        (*key, "l1"): _runs("l1", [90.0, 90.2, 90.4], speedup=2.0),
        (*key, "fcs"): _runs("fcs", [95.0], speedup=1.8),
        (*key, "hnsi"): _runs("hnsi", [89.0, 89.5], speedup=1.1),
    }
    (row,) = choice_rows(groups)[0]
    assert row[3] == "`l1` (90.20 ± 0.20, 2.00x)" and row[4] == "none" and row[5] == "none"
    assert row[6] == "`fcs` (95.00, n=1, 1.80x), `hnsi`† (89.25, n=2, 1.10x)"
    del groups[(*key, "l1")]
    (row,) = choice_rows(groups)[0]
    assert row[3] == "none ranked yet" and row[6].startswith("`fcs` (95.00, n=1") and row[7] == "-"


@pytest.mark.parametrize("variant", ["probability", "bn-scale-noft", "fcs-mlft-half"])
def test_variants_without_the_whole_budget_make_no_row(variant: str) -> None:
    from _matrix_choice import choice_rows

    rows, _ = choice_rows({("mobilenet_v2", "params15", variant): _runs(variant, [80.0, 81.0])})
    assert rows == []


def test_fewer_than_three_seeds_on_a_side_is_never_significant() -> None:
    """Two runs that agree to 0.01 point have a std of 0: with two seeds the difference and
    its 2SE are shown, but only three seeds a side can make it significant."""
    from _matrix_claims import TOO_FEW, Stat, difference, verdict

    two_a, two_b = Stat.of([94.16, 94.16]), Stat.of([94.19, 94.23])
    d = difference(two_a, two_b)
    assert d.diff == pytest.approx(-0.05) and d.se == pytest.approx(math.sqrt(0.02**2 * 2 / 2))
    assert abs(d.diff) > 2 * d.se and not d.significant and verdict(d) == TOO_FEW
    three = difference(Stat.of([94.16, 94.16, 94.17]), Stat.of([94.19, 94.23, 94.21]))
    assert three.significant and verdict(three) == "not met"
