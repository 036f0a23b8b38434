"""engine_timing.py's verdict on the speed goal (at most 1.0x Torch-Pruning): the paired
ratios' quartiles and the "within noise" rule, against figures worked out by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
pytest.importorskip("torch_pruning")  # a benchmark dependency (the dev extra installs it)


@pytest.fixture(autouse=True)
def _benchmarks_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))


def test_paired_spread_by_hand() -> None:
    from engine_timing import paired_spread

    # ratios 1.2, 0.8, 1.0, 1.1, 0.9 -> sorted 0.8 0.9 1.0 1.1 1.2: quartiles 0.9 and 1.1
    ours, theirs = [12.0, 8.0, 10.0, 11.0, 9.0], [10.0] * 5
    assert paired_spread(ours, theirs) == pytest.approx((0.9, 1.1))
    assert paired_spread([3.0], [2.0]) == (1.5, 1.5)


def _res(ours: list[float], theirs: list[float]) -> dict:
    import statistics

    samples = {"ours_trace": ours, "tp_build": theirs, "ours_surgery": theirs, "tp_prune": theirs}
    return {
        "model": "m",
        "input": [1, 3, 32, 32],
        "median_ms": {k: statistics.median(v) for k, v in samples.items()},
        "samples_ms": samples,
        "params_after": {"ours": 1, "tp": 1},
        "macs_after": {"ours": 1, "tp": 1},
        "same_layer_shapes": True,
        "max_output_diff": 0.0,
    }


def test_a_miss_is_within_noise_only_when_the_middle_half_reaches_the_goal() -> None:
    from engine_timing import _row

    noisy = _res([12.0, 8.0, 10.5, 11.0, 9.5], [10.0] * 5)  # median ratio 1.05, quartiles 0.95-1.1
    row = _row(noisy)
    assert not noisy["goal_met"]["trace"] and noisy["within_noise"]["trace"]
    assert row[3] == "1.05x (0.95-1.10)"
    assert noisy["goal_met"]["surgery"] and not noisy["within_noise"]["surgery"]  # 1.0x: met

    slow = _res([12.0, 12.5, 13.0, 12.2, 12.8], [10.0] * 5)  # every ratio above 1.2
    _row(slow)
    assert not slow["goal_met"]["trace"] and not slow["within_noise"]["trace"]
