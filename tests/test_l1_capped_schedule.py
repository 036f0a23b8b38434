"""l1-capped's round schedule: cut shares and fine-tuning epochs per round against values
worked out by hand, the budget kept whole, and a valid schedule on the smallest budgets."""

from __future__ import annotations

import pytest

from secateurs.errors import ConfigError
from secateurs.methods import get_method
from secateurs.methods.l1_capped import L1CappedOptions, l1_capped_schedule
from secateurs.pipeline import PruneConfig

DEFAULT = L1CappedOptions()
#: Fine-tuning between the cuts: 60% of the epochs after the last (the default until 2026-12-01).
SPLIT = L1CappedOptions(final_share=0.6)
# Front-loaded shares by hand: 1 - (2/3)^2 = 5/9, 1 - (1/3)^2 = 8/9, 1.
FRONT = [5 / 9, 8 / 9, 1.0]


@pytest.mark.parametrize(
    "epochs, expected",
    [
        # final = ceil(0.6 * epochs); the rest split over rounds 1-2, round 1 taking the odd one
        (0, [0, 0, 0]),
        (1, [0, 0, 1]),  # 0.4 -> 0 epochs before the last cut
        (2, [0, 0, 2]),  # 0.8 -> 0
        (3, [1, 0, 2]),  # 1.2 -> 1
        (5, [1, 1, 3]),  # 2.0 -> 2 (not 1: 5 * 0.4 in floating point is checked here)
        (7, [1, 1, 5]),  # 2.8 -> 2
        (10, [2, 2, 6]),  # 4.0 -> 4
        (30, [6, 6, 18]),  # 12 -> 12
    ],
)
def test_split_schedule_by_hand(epochs, expected):
    schedule = l1_capped_schedule(SPLIT, epochs, None)
    assert [e for _, e in schedule] == expected
    assert [s for s, _ in schedule] == pytest.approx(FRONT)


@pytest.mark.parametrize("epochs", [0, 1, 5, 30])
@pytest.mark.parametrize("rounds", [None, 1, 2, 4])
def test_default_schedule_cuts_three_times_and_fine_tunes_after_the_last(rounds, epochs):
    """The default: front-loaded cuts, every epoch on the final architecture."""
    schedule = l1_capped_schedule(DEFAULT, epochs, rounds)
    n = 3 if rounds is None else rounds
    assert [e for _, e in schedule] == [0] * (n - 1) + [epochs]
    assert [s for s, _ in schedule] == pytest.approx([1 - (1 - (i + 1) / n) ** 2 for i in range(n)])


@pytest.mark.parametrize("epochs", range(0, 41))
@pytest.mark.parametrize("rounds", [1, 2, 3, 4, 7])
@pytest.mark.parametrize(
    "options",
    [DEFAULT, SPLIT, L1CappedOptions(final_share=None, front_load=1.0), L1CappedOptions(front_load=0.5)],
    ids=["default", "split", "even", "all-final-back-loaded"],
)
def test_every_schedule_is_valid_and_keeps_the_budget(options, rounds, epochs):
    schedule = l1_capped_schedule(options, epochs, rounds)
    assert len(schedule) == rounds
    shares = [s for s, _ in schedule]
    assert all(0 < a < b for a, b in zip(shares, shares[1:], strict=False)) and shares[0] > 0
    assert shares[-1] == 1.0
    epochs_per_round = [e for _, e in schedule]
    assert all(isinstance(e, int) and e >= 0 for e in epochs_per_round)
    assert sum(epochs_per_round) == epochs


@pytest.mark.parametrize("epochs", range(1, 41))
def test_the_last_round_gets_at_least_as_much_as_any_other(epochs):
    epochs_per_round = [e for _, e in l1_capped_schedule(SPLIT, epochs, None)]
    assert epochs_per_round[-1] == max(epochs_per_round) and epochs_per_round[-1] >= 1


@pytest.mark.parametrize(
    "rounds, epochs, expected",
    [
        (1, 5, [(1.0, 5)]),
        (2, 5, [(0.75, 2), (1.0, 3)]),  # 1 - (1/2)^2; 5 * 0.4 = 2 before the last cut
        (4, 10, [(7 / 16, 2), (3 / 4, 1), (15 / 16, 1), (1.0, 6)]),  # 4 epochs over 3 rounds: 2, 1, 1
    ],
)
def test_other_round_counts_by_hand(rounds, epochs, expected):
    schedule = l1_capped_schedule(SPLIT, epochs, rounds)
    assert [e for _, e in schedule] == [e for _, e in expected]
    assert [s for s, _ in schedule] == pytest.approx([s for s, _ in expected])


def test_even_options_give_the_schedule_every_other_method_gets():
    even = L1CappedOptions(final_share=None, front_load=1.0)
    assert l1_capped_schedule(even, 5, None) == [(1 / 3, 1), (2 / 3, 2), (1.0, 2)]
    for epochs in range(12):
        assert l1_capped_schedule(even, epochs, 3) == get_method("l1").round_schedule(None, epochs, 3)


def test_final_share_and_front_load_by_hand():
    options = L1CappedOptions(final_share=0.5, front_load=3.0)
    # 10 * 0.5 = 5 over rounds 1-2 (3, 2); shares 1 - (2/3)^3 = 19/27, 1 - (1/3)^3 = 26/27
    schedule = l1_capped_schedule(options, 10, None)
    assert [e for _, e in schedule] == [3, 2, 5]
    assert [s for s, _ in schedule] == pytest.approx([19 / 27, 26 / 27, 1.0])


def test_the_pipeline_plans_the_method_schedule():
    config = PruneConfig(method="l1-capped", macs_reduction=0.5, finetune_epochs=5)
    assert config.epochs_per_round() == [0, 0, 5] and config.resolved_rounds() == 3
    assert [s for s, _ in config.schedule()] == pytest.approx(FRONT)
    assert [config.plan.goal(r) for r in (1, 2, 3)] == pytest.approx([0.5 * s for s in FRONT])
    assert [r.epochs for r in config.plan.rounds] == [0, 0, 5] and config.plan.rounds[-1].train.epochs == 5
    split = PruneConfig(method="l1-capped", macs_reduction=0.5, finetune_epochs=5, method_options={"final_share": 0.6})
    assert split.epochs_per_round() == [1, 1, 3]
    assert [r.train.epochs for r in split.plan.rounds] == [1, 1, 3]
    assert PruneConfig(method="l1-capped", macs_reduction=0.5).epochs_per_round() == [0, 0, 3]  # 3 by default
    old = PruneConfig(
        method="l1-capped",
        macs_reduction=0.5,
        finetune_epochs=5,
        method_options={"final_share": None, "front_load": 1.0},
    )
    assert old.schedule() == [(1 / 3, 1), (2 / 3, 2), (1.0, 2)]


@pytest.mark.parametrize(
    "values, word",
    [
        ({"final_share": 0.0}, "final_share"),
        ({"final_share": 1.5}, "final_share"),
        ({"front_load": 0.0}, "front_load"),
        ({"front_load": -1.0}, "front_load"),
        ({"final_share": "most"}, "final_share"),
    ],
)
def test_bad_options_are_refused_by_name(values, word):
    with pytest.raises(ConfigError, match=word):
        get_method("l1-capped").make_options(values)
