"""benchmarks/cut_only.py: in layer scope every criterion leaves the same widths to within a
channel (so the criteria differ only in which channels go), which is what the script's
comparison rests on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(autouse=True)
def _benchmarks_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))


def test_layer_scope_gives_every_criterion_the_same_widths() -> None:
    from cut_only import cut_once

    from secateurs import create_model
    from secateurs.data.synthetic import synthetic

    torch.manual_seed(0)
    model = create_model("test_resnet", num_classes=10, in_channels=3)
    train, test = synthetic("train", None, num_samples=256), synthetic("test", None, num_samples=64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runs = {m: cut_once(model, train, test, m, "layer", 0.5, seed=0) for m in ("l1", "fcs", "random")}
    widths = {m: r["conv_widths"] for m, r in runs.items()}
    # The same share of every layer, to within one channel: the solver's last step, which
    # reaches the target, goes to the best-scored channels across layers.
    for other in ("fcs", "random"):
        assert all(abs(a - b) <= 1 for a, b in zip(widths["l1"], widths[other], strict=True))
    assert all(r["macs_reduction"] >= 0.45 for r in runs.values())
    assert all(0.0 <= r["top1"] <= 100.0 for r in runs.values())
    # The checkpoint's model is cut in copies: it is left as it was.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    spread = cut_once(model, train, test, "l1", "global", 0.5, seed=0)["conv_widths"]
    assert len(spread) == len(widths["l1"])


def test_method_options_after_a_colon() -> None:
    from cut_only import parse_method

    assert parse_method("fcs:merge=true,channels_per_bin=4") == ("fcs", {"merge": True, "channels_per_bin": 4})
    assert parse_method("l1") == ("l1", {})
    with pytest.raises(SystemExit, match="NAME:key=value"):
        parse_method("fcs:merge")


def test_a_name_with_a_folder_is_refused_before_anything_is_read(tmp_path, capsys) -> None:
    from cut_only import main

    with pytest.raises(SystemExit):
        main(["--checkpoint", str(tmp_path / "missing.safetensors"), "--name", "../elsewhere"])
    assert "--name '../elsewhere': a file name without a folder" in capsys.readouterr().err


def test_l1_capped_widths_columns_reach_the_target_and_differ_only_by_scale() -> None:
    """benchmarks/l1_capped_widths.py: every column reaches the MACs target and keeps at most
    the unpruned widths; the model given is left as it was (each cut works on a copy)."""
    from l1_capped_widths import CUTS, cut_widths

    from secateurs import create_model
    from secateurs.data.synthetic import synthetic

    torch.manual_seed(0)
    model = create_model("test_resnet", num_classes=10, in_channels=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kept, params, achieved = cut_widths(model, synthetic("train", None, num_samples=256), 0.5)
    assert set(kept) == set(params) == set(achieved) == set(CUTS)
    assert all(abs(a - 0.5) <= 0.01 for a in achieved.values()), achieved
    full = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert all(kept[c].keys() == full.keys() and all(kept[c][n] <= full[n] for n in full) for c in CUTS)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
