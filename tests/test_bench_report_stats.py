"""The report's statistics (benchmarks/_matrix_claims.py, _matrix_choice.py, report.py) on
chosen records, in-process, against figures computed by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(autouse=True)
def _bench_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))


def _runs(variant: str, values: list[float | None], seed0: int = 0) -> list[dict]:
    return [
        {
            "variant": variant,
            "seed": seed0 + i,
            "top1": x,
            "achieved": 0.5,
            "wall_s": 1.0,
            "baseline": {"top1": 94.1, "params": 1000, "macs": 2000},
        }
        for i, x in enumerate(values)
    ]


def test_stat_is_the_sample_std_and_the_standard_error_is_combined():
    """[1, 2, 3, 4]: mean 2.5, sample sd sqrt(5/3) = 1.2910; [2, 2, 5]: mean 3, sd sqrt(3) =
    1.7321; SE = sqrt(5/12 + 3/3) = 1.1902, 2SE 2.3805 > |-0.5|: not significant."""
    from _matrix_claims import Stat, difference

    a, b = Stat.of([1.0, 2.0, None, 3.0, 4.0]), Stat.of([2.0, 2.0, 5.0])
    assert (a.mean, a.n, b.mean, b.n) == (2.5, 4, 3.0, 3)
    assert a.std == pytest.approx(math.sqrt(5 / 3)) and b.std == pytest.approx(math.sqrt(3))
    d = difference(a, b)
    assert d.diff == -0.5 and d.se == pytest.approx(math.sqrt(5 / 12 + 1)) and not d.significant
    assert Stat.of([90.0]).std is None and not difference(Stat.of([90.0]), b).significant  # one seed: no SE
    assert not difference(Stat.of([99.0, 99.0]), b).significant  # two seeds: SE shown, never significant


def test_equal_values_on_both_sides_are_never_a_significant_difference():
    """94.1 on every seed, 3 seeds against 4: std 0 on both sides, 2SE 0, and the difference
    is 0, not the float rounding of two means (which read +0.00* and decided the claim)."""
    from _matrix_claims import NOT_SIGNIFICANT, Stat, difference, pair_claim_rows

    a, b = Stat.of([94.1] * 3), Stat.of([94.1] * 4)
    d = difference(a, b)
    assert (d.diff, d.se, d.significant) == (0.0, 0.0, False) and d.text() == "+0.00 (2SE 0.00)"
    assert a.mean == b.mean == 94.1 and a.std == b.std == 0.0
    groups = {
        ("m", "macs50", "hnsi"): _runs("hnsi", [94.1] * 3),
        ("m", "macs50", "hnsi-single-stage"): _runs("hnsi-single-stage", [94.1] * 4),
    }
    (row,) = [r for r in pair_claim_rows(groups, set()) if r[1].startswith("hnsi vs hnsi-single-stage")]
    assert row[4] == NOT_SIGNIFICANT and row[3].endswith("+0.00 (2SE 0.00)")
    # one test image apart on every seed (0.01 point), std 0 on both sides: that is significant
    higher = difference(Stat.of([94.11] * 3), Stat.of([94.1] * 4))
    assert higher.significant and higher.diff == pytest.approx(0.01)


def test_a_best_equal_to_the_baseline_on_every_seed_recovered_it():
    """Every seed at the baseline's 94.1: the gap is 0, which is "yes", not "-0.00: no"."""
    from _matrix_choice import choice_rows

    groups = {("m", "macs50", "l1"): _runs("l1", [94.1] * 3), ("m", "macs50", "fcs"): _runs("fcs", [89.0] * 3)}
    (row,) = choice_rows(groups)[0]
    assert row[3] == "`l1` (94.10 ± 0.00)" and row[4] == "none" and row[7] == "+0.00: yes"


def test_plot_skips_a_variant_whose_runs_have_no_final_top1(tmp_path):
    pytest.importorskip("matplotlib")
    from report import plot

    groups = {
        ("m", "macs50", "l1"): _runs("l1", [90.0, 90.2]),
        ("m", "macs50", "fcs"): _runs("fcs", [None, None]),
    }
    assert plot(groups, tmp_path / "p.png") == "![top-1 against MACs reduction](p.png)"
    assert (tmp_path / "p.png").stat().st_size > 0


@pytest.mark.parametrize(
    "mlft_wall, expected",
    [(300.0, "not significant"), (500.0, "not met (wall time)"), (400.0, "not met (wall time)")],
)
def test_mlft_claim_needs_less_fine_tuning_wall_time_as_well_as_the_accuracy(mlft_wall, expected):
    """Equal top-1 (94.1 on 3 seeds each) with 2 epochs against 5: the claim holds only when
    mlft's fine-tuning also took less wall time than tft's 400 s (a tie on time is not less)."""
    from _matrix_claims import pair_claim_rows

    def runs(variant: str, epochs: int, wall: float) -> list[dict]:
        return [r | {"finetune_epochs": epochs, "finetune_s": wall} for r in _runs(variant, [94.1] * 3)]

    groups = {
        ("m", "macs50", "fcs-mlft-half"): runs("fcs-mlft-half", 2, mlft_wall),
        ("m", "macs50", "fcs"): runs("fcs", 5, 400.0),
    }
    (row,) = [r for r in pair_claim_rows(groups, set()) if r[1].startswith("fcs-mlft-half vs fcs")]
    assert row[4] == expected
    ratio = f"{mlft_wall / 400:.2f}x"
    assert row[3].endswith(f"; 2 vs 5 epochs; fine-tuning wall {mlft_wall:.0f}s vs 400s per run ({ratio})")


@pytest.mark.parametrize("tft_wall", [None, 0.0])
def test_mlft_claim_without_recorded_wall_time_keeps_the_accuracy_verdict(tft_wall):
    """A tft result without its fine-tuning time (an older file) or with none measured: the row
    says the time was not recorded, and a tie on accuracy is not called met (no division by it)."""
    from _matrix_claims import pair_claim_rows

    def runs(variant: str, epochs: int, wall: float | None) -> list[dict]:
        return [r | {"finetune_epochs": epochs, "finetune_s": wall} for r in _runs(variant, [94.1] * 3)]

    groups = {
        ("m", "macs50", "fcs-mlft-half"): runs("fcs-mlft-half", 2, 300.0),
        ("m", "macs50", "fcs"): runs("fcs", 5, tft_wall),
    }
    (row,) = [r for r in pair_claim_rows(groups, set()) if r[1].startswith("fcs-mlft-half vs fcs")]
    assert row[4] == "not significant on accuracy, wall time not recorded"
    assert row[3].endswith("; 2 vs 5 epochs; fine-tuning wall time not recorded")
