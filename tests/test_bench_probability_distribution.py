"""benchmarks/probability_distribution.py: P(y <= 0) per layer type on a depthwise separable
block whose BN parameters are planted, against Phi worked out by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(autouse=True)
def _benchmarks_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _block() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),  # stem: full 3x3
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 1, bias=False),  # expansion: pointwise
        nn.BatchNorm2d(4),
        nn.ReLU6(),
        nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False),  # depthwise
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 2, 1, bias=False),
        nn.BatchNorm2d(2),  # linear bottleneck: no activation, not a candidate
    )
    with torch.no_grad():
        # beta / |gamma| = -3, -1, 0, 2: P = Phi(3), Phi(1), 0.5, Phi(-2)
        for i in (1, 4, 7):
            m[i].weight.copy_(torch.tensor([1.0, -2.0, 0.5, 1.0]))
            m[i].bias.copy_(torch.tensor([-3.0, -2.0, 0.0, 2.0]))
        m[7].weight[3] = 0.0  # gamma = 0, beta > 0: P = 0 by the formula
    return m.eval()


def test_probabilities_per_layer_type_by_hand() -> None:
    from probability_distribution import bn_probabilities, summarise

    dist = bn_probabilities(_block(), [3, 8, 8])
    assert sorted(dist) == ["depthwise", "full 3x3", "pointwise 1x1"]  # the bottleneck BN is absent
    expected = torch.tensor([_phi(3), _phi(1), 0.5, _phi(-2)], dtype=torch.float64)
    torch.testing.assert_close(dist["full 3x3"]["p"], expected)
    torch.testing.assert_close(dist["depthwise"]["p"], torch.tensor([_phi(3), _phi(1), 0.5, 0.0], dtype=torch.float64))
    rows = {r["type"]: r for r in summarise(dist)}
    assert rows["all"]["channels"] == 12
    # P >= 0.99: Phi(3) = 0.99865 in each of the three layers; P >= 0.5: three of four (0.5 counts).
    assert rows["all"]["share_p_at_least"]["0.99"] == pytest.approx(3 / 12)
    assert rows["depthwise"]["share_p_at_least"]["0.5"] == pytest.approx(3 / 4)
    assert rows["full 3x3"]["share_p_at_least"]["0.9"] == pytest.approx(1 / 4)  # Phi(1) = 0.84 is not
    assert rows["depthwise"]["share_small_gamma"] == pytest.approx(1 / 4)
    assert rows["full 3x3"]["median_abs_gamma"] == pytest.approx(1.0)  # torch's median: the lower middle


def test_one_layer_type_has_no_all_row() -> None:
    from probability_distribution import summarise

    dist = {"full 3x3": {"p": torch.tensor([0.1, 0.995]), "gamma": torch.tensor([1.0, 0.001])}}
    (row,) = summarise(dist)
    assert row["type"] == "full 3x3" and row["share_p_at_least"]["0.99"] == 0.5 and row["share_small_gamma"] == 0.5


def test_histogram_counts_every_channel_once() -> None:
    from probability_distribution import BINS, summarise

    dist = {"depthwise": {"p": torch.tensor([0.0, 0.01, 0.5, 0.999, 1.0]), "gamma": torch.ones(5)}}
    (row,) = summarise(dist)
    hist = row["histogram"]
    assert len(hist) == BINS and sum(hist) == 5
    assert hist[0] == 2 and hist[BINS // 2] == 1 and hist[-1] == 2  # 0.5 opens the upper half; 1.0 is in the last bin


def test_append_adds_epochs_and_replaces_a_label(tmp_path, monkeypatch) -> None:
    import _common
    import probability_distribution as pd

    from secateurs import create_model, save

    monkeypatch.setattr(_common, "RESULTS", tmp_path)
    monkeypatch.setattr(pd, "RESULTS", tmp_path)
    torch.manual_seed(0)
    model = create_model("test_resnet", num_classes=10, in_channels=1)
    ckpt = save(model, tmp_path / "m.safetensors", {"input_shape": [1, 16, 16], "metrics": {"test_top1": 50.0}})
    assert pd.main(["--checkpoint", f"epoch 1={ckpt}", "--name", "pd"]) == 0
    assert pd.main(["--checkpoint", f"epoch 2={ckpt}", "--append", "--name", "pd"]) == 0
    assert pd.main(["--checkpoint", f"epoch 1={ckpt}", "--append", "--name", "pd"]) == 0
    data = json.loads((tmp_path / "pd.json").read_text())
    assert [r["label"] for r in data["results"]] == ["epoch 2", "epoch 1"]
    assert len(data["commands"]) == 3 and (tmp_path / "pd.png").is_file()
    assert data["results"][0]["test_top1"] == 50.0
    assert "| epoch 2 | 50.00 |" in (tmp_path / "pd.md").read_text()


def test_a_checkpoint_without_a_label_is_refused() -> None:
    import probability_distribution as pd

    with pytest.raises(SystemExit, match="LABEL=PATH"):
        pd.main(["--checkpoint", "model.safetensors"])


def test_probability_training_measures_what_the_planted_bns_give(tmp_path) -> None:
    """benchmarks/probability_training.py's measurement of one trained cell: channels planted
    at P = Phi(3) > 0.99 in depthwise blocks are counted, and probability removes them."""
    from probability_training import measure_cell

    from secateurs import create_model, save
    from secateurs.data.synthetic import synthetic

    torch.manual_seed(0)
    model = create_model("test_mobilenet_v2", num_classes=10, in_channels=3)
    # The BN after each depthwise conv (each conv's BN is registered right after it).
    from probability_distribution import layer_type

    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    dw_bns = [b for c, b in zip(convs, convs[1:]) if isinstance(b, nn.BatchNorm2d) and layer_type(c) == "depthwise"]
    planted = 0
    with torch.no_grad():
        for bn in dw_bns:
            bn.weight.fill_(1.0)
            bn.bias.fill_(1.0)  # P = Phi(-1) = 0.16
            bn.weight[0], bn.bias[0] = 1.0, -3.0  # P = Phi(3) = 0.99865
            planted += 1
    ckpt = save(model, tmp_path / "m.safetensors", {"input_shape": [3, 32, 32]})
    test_set = synthetic("test", None, num_samples=64)
    r = measure_cell(ckpt, test_set)
    every = r["p_rows"][-1]
    assert every["type"] == "all"
    dw = next(row for row in r["p_rows"] if row["type"] == "depthwise")
    assert dw["share_p_at_least"]["0.99"] == pytest.approx(planted / dw["channels"])
    # All but one: the first block's depthwise channel is also the stem's output, which the
    # block's residual add reads as it is, so no fold can stand in for it and it stays.
    assert r["channels_removed"] == planted - 1 and r["params_reduction"] > 0
    assert r["top1"] is not None and r["top1_pruned"] is not None


def test_git_history_outside_the_repository_is_refused_by_name(tmp_path) -> None:
    import probability_distribution as pd

    outside = tmp_path / "model.safetensors"
    with pytest.raises(SystemExit, match="not inside the repository.*--checkpoint LABEL=PATH"):
        pd.main(["--git-history", str(outside)])
