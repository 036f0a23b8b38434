"""``method="auto"``: every candidate cuts a copy, the held-out training samples choose, and
only the chosen cut is kept (and fine-tuned)."""

from __future__ import annotations

import json

import pytest
import torch
from _commands import DATA, prune_argv

import secateurs
from secateurs import PruneConfig, prune
from secateurs.cli import main
from secateurs.data import load_dataset
from secateurs.errors import ConfigError
from secateurs.methods.auto import default_candidates
from secateurs.models import create_model
from secateurs.pipeline._data import split_holdout

FAST = {"max_steps_per_epoch": 1, "batch_size": 32, "progress": False}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("test_resnet", num_classes=4, in_channels=3)
    with torch.no_grad():  # distinct BN scales and statistics per channel: criteria must not tie
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.2, 1.5)
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.uniform_(-0.3, 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def data():
    kw = dict(num_samples=192, num_classes=4, in_channels=3, image_size=16, seed=0)
    return load_dataset("synthetic", "train", **kw), load_dataset("synthetic", "test", **kw)


def _auto(model, train, test=None, **kw):
    options = {"candidates": "l1,bn-scale,fpgm,random", "holdout": 64}
    config = PruneConfig(
        method="auto",
        macs_reduction=0.4,
        method_options={**options, **kw.pop("method_options", {})},
        finetune="none",
        bn_recalibration=2,
        calib_samples=32,
        latency=False,
        **kw,
    )
    return prune(model, config=config, train_set=train, test_set=test)


def test_every_candidate_is_scored_and_the_best_is_kept(one_thread, data) -> None:
    train, _ = data
    model = _model()
    pruned, result = _auto(model, train)  # no test set: the choice cannot have read one
    auto = result.rounds[0].details["auto"]
    tried = auto["candidates"]
    assert [t["method"] for t in tried] == ["l1", "bn-scale", "fpgm", "random"]
    scores = {t["method"]: t["holdout_top1"] for t in tried}
    assert auto["chosen"] == max(scores, key=scores.get)
    for t in tried:
        assert abs(t["reduction"] - 0.4) <= 0.01 and t["seconds"] > 0
    assert abs(result.achieved - 0.4) <= 0.01

    # The model kept is the chosen method's own cut of the same training samples (the rest
    # after the hold-out), recalibrated the same way: bitwise the same network.
    rest, held = split_holdout(train, 64, 0, "auto")
    alone, _ = prune(
        model,
        config=PruneConfig(
            method=auto["chosen"],
            macs_reduction=0.4,
            finetune="none",
            bn_recalibration=2,
            calib_samples=32,
            latency=False,
        ),
        train_set=rest,
    )
    assert {k: v.shape for k, v in alone.state_dict().items()} == {k: v.shape for k, v in pruned.state_dict().items()}
    for k, v in alone.state_dict().items():
        assert torch.equal(v, pruned.state_dict()[k]), k
    # ... and its held-out top-1 is the score it was chosen with.
    from secateurs.pipeline._data import top1_accuracy

    assert top1_accuracy(pruned, held, torch.device("cpu")) == pytest.approx(scores[auto["chosen"]])


def test_the_samples_held_out_are_never_in_the_rest(data) -> None:
    train, _ = data
    rest, held = split_holdout(train, 64, 3, "auto")
    assert len(rest) + len(held) == len(train) and len(held) == 64
    rows = {tuple(x.flatten().tolist()) for x in train.images}
    assert len(rows) == len(train)  # synthetic images are distinct, so rows identify samples
    r = {tuple(x.flatten().tolist()) for x in rest.images}
    h = {tuple(x.flatten().tolist()) for x in held.images}
    assert not r & h and r | h == rows
    # a map-style Dataset is split the same way
    ds = torch.utils.data.TensorDataset(torch.arange(100).float().view(100, 1), torch.zeros(100, dtype=torch.long))
    rest, held = split_holdout(ds, 10, 0, "auto")
    assert sorted(set(rest.indices) | set(held.indices)) == list(range(100)) and not set(rest.indices) & set(
        held.indices
    )


def test_the_chosen_cut_is_fine_tuned(one_thread, data, tmp_path) -> None:
    train, test = data
    config = PruneConfig(
        method="auto",
        macs_reduction=0.4,
        method_options={"candidates": "l1,bn-scale", "holdout": 64},
        finetune_epochs=1,
        finetune_train=FAST,
        bn_recalibration=2,
        calib_samples=32,
        latency=False,
    )
    pruned, result = prune(_model(), config=config, train_set=train, test_set=test, run_dir=tmp_path)
    record = result.rounds[0]
    assert record.finetune_epochs == 1 and record.top1_after_finetune is not None
    assert record.details["auto"]["chosen"] in ("l1", "bn-scale")
    assert result.to_dict()["rounds"][0]["details"]["auto"]["holdout_samples"] == 64


@pytest.mark.parametrize(
    "options, words",
    [
        ({"candidates": "l1,no-such-method"}, "no-such-method"),
        ({"candidates": "l1,hnsi"}, "hnsi"),
        ({"candidates": "l1,auto"}, "auto"),
        ({"candidates": "l1,l1"}, "repeat"),
        ({"holdout": 0}, "holdout"),
        ({"holdout": "many"}, "holdout"),
        ({"holdout": 1.5}, "holdout"),
        ({"no_such": 1}, "no_such"),
    ],
)
def test_bad_options_are_refused_by_name(options, words) -> None:
    with pytest.raises(ConfigError, match=words):
        PruneConfig(method="auto", macs_reduction=0.5, method_options=options)


def test_refusals_come_before_the_model_is_touched(data) -> None:
    train, test = data
    model = _model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match="holdout=500"):
        _auto(model, train, test, method_options={"holdout": 500})
    with pytest.raises(ConfigError, match="train_set"):
        _auto(model, None, test)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(8, 3, 16, 16)), batch_size=4)
    with pytest.raises(ConfigError, match="DataLoader"):
        prune(model, "auto", macs_reduction=0.4, train_set=loader, input_shape=(3, 16, 16), finetune="none")
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_a_fractional_holdout_is_a_share_of_the_training_set(data) -> None:
    train, _ = data
    rest, held = split_holdout(train, 0.25, 0, "auto")
    assert (len(held), len(rest)) == (48, 144)


def test_default_candidates_leave_out_the_control_and_other_targets() -> None:
    names = default_candidates()
    assert "random" not in names and "auto" not in names and "hnsi" not in names
    assert {"l1", "l1-capped", "fcs", "bn-scale", "probability"} <= set(names)


def test_cli_records_every_candidate(one_thread, trained_checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "auto"
    argv = prune_argv(trained_checkpoint, out, *DATA, method="auto", macs=0.4)
    argv += ["--method-option", "candidates=l1,bn-scale", "--method-option", "holdout=32", "--finetune", "none"]
    argv += ["--no-latency", "--bn-recalibration", "1"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    auto = metrics["rounds"][0]["details"]["auto"]
    assert [c["method"] for c in auto["candidates"]] == ["l1", "bn-scale"]
    assert metrics["method"] == "auto"
    assert secateurs.load(out / "model.safetensors") is not None
