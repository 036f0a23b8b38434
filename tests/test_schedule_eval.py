"""Learning-rate schedules and the evaluation metrics, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from secateurs.train import SCHEDULES, evaluate


def test_cosine_warms_up_then_decays_to_zero():
    f = SCHEDULES["cosine"]
    assert [f(s, 100, 4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4, 100, 4) == 1.0
    assert f(52, 100, 4) == pytest.approx(0.5)  # half-way through the decay
    assert f(100, 100, 4) == pytest.approx(0.0, abs=1e-12)


def test_onecycle_rises_to_the_peak_at_30_percent_then_anneals():
    f = SCHEDULES["onecycle"]
    assert f(0, 100, 0) == pytest.approx(1 / 25)
    assert max(f(s, 100, 0) for s in range(100)) == pytest.approx(1.0)
    assert f(30, 100, 0) == pytest.approx(1.0)
    assert f(99, 100, 0) < 1e-3
    values = [f(s, 100, 0) for s in range(100)]
    assert all(a <= b for a, b in zip(values[:30], values[1:31]))
    assert all(a >= b for a, b in zip(values[30:], values[31:]))


def test_constant_is_flat_after_warmup():
    f = SCHEDULES["constant"]
    assert [f(s, 10, 2) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]


class FixedLogits(torch.nn.Module):
    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, idx):
        return self.logits[idx]


def test_top1_top5_and_loss_match_a_hand_computation():
    # 12 classes, 3 samples: sample 0 right at rank 1, sample 1 at rank 3, sample 2 at rank 7.
    logits = torch.arange(12, dtype=torch.float32).repeat(3, 1)  # class 11 scores highest
    labels = torch.tensor([11, 9, 5])
    idx = torch.arange(3)
    result = evaluate(FixedLogits(logits), [(idx[:2], labels[:2]), (idx[2:], labels[2:])], num_classes=12)
    log_z = math.log(sum(math.exp(v) for v in range(12)))
    assert result.top1 == pytest.approx(100 / 3)
    assert result.top5 == pytest.approx(200 / 3)
    assert result.loss == pytest.approx(sum(log_z - v for v in (11, 9, 5)) / 3, rel=1e-6)
    assert result.samples == 3


def test_top5_is_omitted_for_ten_classes():
    logits = torch.eye(10)
    result = evaluate(FixedLogits(logits), [(torch.arange(10), torch.arange(10))], num_classes=10)
    assert result.top1 == 100.0 and result.top5 is None and "top5" not in result.to_dict()
