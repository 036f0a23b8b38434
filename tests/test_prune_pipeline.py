"""``secateurs.pipeline.prune`` end to end on a tiny ResNet and synthetic data.

What the run reports is checked against the returned model (measured again here), the
original model against a snapshot of its state, and every refusal against a model that
must not have been touched -- and a pipeline that must not have started.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn as nn

import secateurs
from secateurs import ConfigError, count_macs, count_params
from secateurs.data import LoaderConfig, make_loader
from secateurs.graph import remove_units
from secateurs.methods import ScoreContext, get_method
from secateurs.pipeline import PruneConfig, prune
from secateurs.pipeline import run as run_module
from secateurs.select import CostModel, floors_for, solve, unit_scores

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (3, 32, 32)
FAST = {"batch_size": 64, "progress": False, "max_steps_per_epoch": 2}


@pytest.fixture(scope="module")
def data():
    return (
        secateurs.load_dataset("synthetic", "train", num_samples=128),
        secateurs.load_dataset("synthetic", "test", num_samples=128),
    )


def fresh_model() -> nn.Module:
    torch.manual_seed(0)
    return secateurs.create_model("test_resnet", num_classes=10, in_channels=3)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    now = model.state_dict()
    assert list(now) == list(before)
    for k, v in before.items():
        assert now[k].shape == v.shape and torch.equal(now[k], v), k


def widths(model: nn.Module) -> dict[str, int]:
    return {
        name: (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    }


def top1(model: nn.Module, dataset) -> float:
    return secateurs.evaluate(
        model, make_loader(dataset, LoaderConfig(batch_size=100, train=False)), dataset.info.num_classes
    ).top1


# --- one round ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def l1_run(data):
    train_set, test_set = data
    model = fresh_model()
    model.train()
    before = snapshot(model)
    pruned, result = prune(
        model,
        "l1",
        macs_reduction=0.5,
        train_set=train_set,
        test_set=test_set,
        finetune_epochs=1,
        finetune_train=FAST,
        latency=False,
    )
    return model, before, pruned, result


def test_the_original_model_is_unchanged(l1_run):
    model, before, pruned, _ = l1_run
    assert_unchanged(model, before)
    assert model.training  # not even its mode
    assert pruned is not model
    assert widths(model) == widths(fresh_model())


def test_the_report_matches_the_returned_model(l1_run, data):
    model, _, pruned, result = l1_run
    assert result.method == "l1" and result.metric == "macs" and result.target == 0.5
    assert result.before["macs"] == count_macs(model, SHAPE) and result.before["params"] == count_params(model)
    assert result.after["macs"] == count_macs(pruned, SHAPE)
    assert result.after["params"] == count_params(pruned)
    assert result.achieved == pytest.approx(1 - result.after["macs"] / result.before["macs"], abs=1e-12)
    assert 0.5 <= result.achieved <= 0.51 and result.within_tolerance and result.notes == []
    assert result.channels_before == widths(model)
    assert result.channels_after == widths(pruned)
    assert result.after["top1"] == pytest.approx(top1(pruned, data[1]))
    assert result.before["top1"] == pytest.approx(top1(model, data[1]))
    assert "latency_ms" not in result.before and "latency_ms" not in result.after
    assert set(result.timing_s) == {"scoring", "surgery", "finetune", "total"}
    assert all(v >= 0 for v in result.timing_s.values())
    assert result.timing_s["total"] >= result.timing_s["finetune"] > 0
    assert json.loads(json.dumps(result.to_dict()))["within_tolerance"] is True


def test_the_round_is_recorded(l1_run):
    _, _, _, result = l1_run
    (r,) = result.rounds
    assert (r.round, r.target, r.finetune_epochs) == (1, 0.5, 1)
    assert r.achieved == pytest.approx(result.achieved)  # fine-tuning changes no width
    assert r.top1_after_pruning is not None and r.top1_after_finetune == pytest.approx(result.after["top1"])
    assert r.channels_removed > 0 and r.note is None


def test_channels_shrink(l1_run):
    _, _, pruned, result = l1_run
    before, after = result.channels_before, result.channels_after
    assert set(before) == set(after)
    assert all(after[k] <= before[k] for k in before)
    assert sum(after.values()) < sum(before.values())
    assert after["head.2"] == before["head.2"] == 10  # the classes stay
    assert all(after[k] >= max(1, -(-before[k] // 10)) for k in before)  # min_keep_fraction 0.1
    assert not pruned.training
    assert pruned(torch.randn(2, *SHAPE)).shape == (2, 10)


def test_params_target(data):
    train_set, test_set = data
    model = fresh_model()
    pruned, result = prune(
        model, "l2", params_reduction=0.4, scope="layer", finetune="none", test_set=test_set, latency=False
    )
    assert result.metric == "params" and result.target == 0.4
    assert result.after["params"] == count_params(pruned)
    assert result.achieved == pytest.approx(1 - count_params(pruned) / count_params(model))
    assert 0.4 <= result.achieved <= 0.41
    assert [r.finetune_epochs for r in result.rounds] == [0]
    assert result.rounds[0].top1_after_finetune is None


def test_accuracy_after_finetuning_without_per_epoch_evaluation(data):
    train_set, test_set = data
    pruned, result = prune(
        fresh_model(),
        "l1",
        macs_reduction=0.3,
        train_set=train_set,
        test_set=test_set,
        finetune_epochs=1,
        finetune_train=FAST,
        latency=False,
        eval_each_epoch=False,
    )
    assert result.rounds[0].top1_after_finetune == pytest.approx(top1(pruned, test_set))
    assert result.after["top1"] == pytest.approx(top1(pruned, test_set))


def test_input_shape_without_data():
    model = fresh_model()
    pruned, result = prune(model, "fpgm", macs_reduction=0.3, finetune="none", input_shape=SHAPE, latency=False)
    assert result.before["top1"] is None and result.after["top1"] is None
    assert result.after["macs"] == count_macs(pruned, SHAPE)
    assert result.achieved >= 0.3


def test_l1_capped_with_alpha_one_is_l1():
    """alpha = 1 leaves L1 / mean(L1): after the per-layer normalisation, the same ranking as l1."""
    a, ra = prune(
        fresh_model(),
        "l1-capped",
        macs_reduction=0.4,
        rounds=1,
        method_options={"alpha": 1.0},
        finetune="none",
        input_shape=SHAPE,
        latency=False,
    )
    b, rb = prune(fresh_model(), "l1", macs_reduction=0.4, finetune="none", input_shape=SHAPE, latency=False)
    assert ra.config["method_options"] == {"alpha": 1.0}
    assert ra.channels_after == rb.channels_after
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sb)


# --- rounds -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, epochs",
    [
        ({"method": "l1-capped", "method_options": {"final_share": None}, "finetune_epochs": 2}, [0, 1, 1]),
        ({"method": "l1-capped", "method_options": {"final_share": None}, "finetune_epochs": 7}, [2, 2, 3]),
        ({"method": "l1-capped", "method_options": {"final_share": None}, "finetune_epochs": 1}, [0, 0, 1]),
        ({"method": "l1-capped", "method_options": {"final_share": None}, "finetune_epochs": 6}, [2, 2, 2]),
        ({"method": "l1-capped", "method_options": {"final_share": None}, "finetune": "none"}, [0, 0, 0]),
        ({"method": "l1-capped", "method_options": {"final_share": None}}, [1, 1, 1]),  # 3 epochs by default
        ({"method": "probability"}, [0]),  # its default mode is none
        ({"method": "probability", "finetune_epochs": 2}, [2]),  # asking for epochs asks for fine-tuning
        ({"method": "l1", "finetune_epochs": 3}, [3]),
        ({"method": "l1", "finetune_epochs": 5, "rounds": 2}, [2, 3]),
        (
            {"method": "l1-capped", "method_options": {"final_share": None}, "finetune_epochs": 0, "rounds": 4},
            [0, 0, 0, 0],
        ),
    ],
)
def test_epochs_per_round(options, epochs):
    config = PruneConfig(macs_reduction=0.5, **options)
    assert config.epochs_per_round() == epochs
    assert config.resolved_rounds() == len(epochs)


def test_l1_capped_prunes_in_three_rounds(data, tmp_path):
    train_set, test_set = data
    model = fresh_model()
    before = snapshot(model)
    pruned, result = prune(
        model,
        "l1-capped",
        macs_reduction=0.5,
        rounds=3,
        finetune_epochs=2,
        # equal steps and an even split (its default schedule: tests/test_l1_capped_schedule.py)
        method_options={"final_share": None, "front_load": 1.0},
        train_set=train_set,
        test_set=test_set,
        finetune_train=FAST,
        latency=False,
        run_dir=tmp_path,
    )
    assert_unchanged(model, before)
    rounds = result.rounds
    assert [r.round for r in rounds] == [1, 2, 3]
    assert [r.target for r in rounds] == pytest.approx([1 / 6, 2 / 6, 3 / 6])
    assert [r.finetune_epochs for r in rounds] == [0, 1, 1]
    assert rounds[0].top1_after_finetune is None
    assert all(r.top1_after_finetune is not None for r in rounds[1:])
    for r in rounds:  # each round meets its cumulative target, measured against the unpruned model
        assert r.target <= r.achieved <= r.target + 0.02 and r.channels_removed > 0
    assert rounds[0].achieved < rounds[1].achieved < rounds[2].achieved == pytest.approx(result.achieved)
    assert abs(result.achieved - 0.5) <= 0.01
    assert result.after["macs"] == count_macs(pruned, SHAPE)
    assert result.config["rounds"] == 3 and result.config["method"] == "l1-capped"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["finetune-2", "finetune-3", "progress.safetensors"]


def test_each_round_scores_the_pruned_model():
    """Round 2 re-traces and re-scores round 1's model and plans against the unpruned MACs:
    the same steps done by hand with the building blocks give the same model."""
    model = fresh_model().eval()
    pruned, two = prune(model, "l1", macs_reduction=0.4, rounds=2, finetune="none", input_shape=SHAPE, latency=False)
    assert [r.target for r in two.rounds] == pytest.approx([0.2, 0.4])
    ref = copy.deepcopy(model)
    x = torch.zeros(1, *SHAPE)
    base = count_macs(ref, SHAPE)
    floors = floors_for(CostModel.of(ref, x).widths, 0.1)
    method = get_method("l1")
    for r, goal in zip(two.rounds, (0.2, 0.4)):
        graph = secateurs.trace(ref, x)
        scores = unit_scores(graph, method.score(ScoreContext(ref, graph, method.make_options())))
        plan = solve(graph, scores, CostModel.of(ref, x), goal, "macs", "global", floors, reference=base)
        remove_units(ref, graph, plan.units, x)
        assert r.channels_removed == len(plan.units) > 0
        assert r.achieved == pytest.approx(1 - count_macs(ref, SHAPE) / base)
    assert widths(ref) == two.channels_after == widths(pruned)
    sr, sp = ref.state_dict(), pruned.state_dict()
    assert all(torch.equal(sr[k], sp[k]) for k in sr)


# --- refusals -----------------------------------------------------------------------------


@pytest.fixture
def untouched(monkeypatch):
    """Any refusal must come before the pipeline measures, traces or copies anything."""

    def boom(*args, **kwargs):
        raise AssertionError("the pipeline started before refusing")

    monkeypatch.setattr(run_module, "_snapshot", boom)
    monkeypatch.setattr(run_module, "trace", boom)


REFUSALS = [
    pytest.param({"method": "l1-caped", "macs_reduction": 0.5}, "'l1-capped'", id="unknown-method"),
    pytest.param({"method": "fgpm", "macs_reduction": 0.5}, "'fpgm'", id="unknown-method-2"),
    pytest.param({"macs_reduction": 0.5, "params_reduction": 0.5}, "exactly one target", id="both-targets"),
    pytest.param({}, "exactly one target", id="no-target"),
    pytest.param({"macs_reduction": 1.5}, "macs_reduction", id="target-1.5"),
    pytest.param({"params_reduction": 0.0}, "params_reduction", id="target-0"),
    pytest.param({"macs_reduction": 0.5, "finetune": "distil"}, "mlft", id="finetune-mode"),
    pytest.param(
        {"macs_reduction": 0.5, "finetune": "kd", "finetune_options": {"temprature": 2.0}},
        "temperature",
        id="finetune-option-key",
    ),
    pytest.param(
        {"macs_reduction": 0.5, "finetune": "mlft", "finetune_options": {"peer": "twin"}},
        "unpruned",
        id="finetune-option-value",
    ),
    pytest.param(
        {"macs_reduction": 0.5, "finetune": "kd", "finetune_options": {"temperature": 0}},
        "temperature",
        id="finetune-option-range",
    ),
    pytest.param(
        {"macs_reduction": 0.5, "finetune": "mlft", "finetune_options": {"weight": "a"}},
        "'weight'",
        id="finetune-option-type",
    ),
    pytest.param({"macs_reduction": 0.5, "finetune_train": {"batch_sise": 64}}, "batch_sise", id="train-key"),
    pytest.param({"macs_reduction": 0.5, "finetune_train": {"lr": -1.0}}, "lr", id="train-value"),
    pytest.param({"macs_reduction": 0.5, "finetune_train": {"epochs": 3}}, "finetune_epochs", id="train-epochs"),
    pytest.param({"macs_reduction": 0.5, "finetune_epochs": 1, "train_set": None}, "train_set", id="no-train-set"),
    pytest.param(
        {"method": "feature-l1", "macs_reduction": 0.5, "finetune_epochs": 0, "train_set": None},
        "train_set",
        id="feature-l1-no-train-set",
    ),
    pytest.param({"macs_reduction": 0.5, "method_options": {"alpha": 1.5}}, "alpha", id="bad-alpha"),
    pytest.param({"macs_reduction": 0.5, "method_options": {"beta": 1}}, "beta", id="unknown-option"),
    pytest.param({"method": "l1", "macs_reduction": 0.5, "method_options": {"q": 0.5}}, "'q'", id="option-of-other"),
    pytest.param({"macs_reduction": 0.5, "scope": "net"}, "'net'", id="scope"),
    pytest.param({"macs_reduction": 0.5, "rounds": 0}, "rounds", id="rounds"),
    pytest.param({"macs_reduction": 0.5, "min_keep_fraction": 1.0}, "min_keep_fraction", id="floor"),
    pytest.param(
        {"macs_reduction": 0.5, "finetune": "none", "train_set": None, "test_set": None}, "input_shape", id="no-shape"
    ),
]


@pytest.mark.parametrize("options, needle", REFUSALS)
def test_refusals_leave_the_model_alone(options, needle, data, tmp_path, untouched):
    model = fresh_model()
    before = snapshot(model)
    kwargs = {
        "train_set": data[0],
        "test_set": data[1],
        "finetune_train": FAST,
        "latency": False,
        "run_dir": tmp_path / "run",
        **options,
    }
    method = kwargs.pop("method", "l1-capped")
    with pytest.raises(ConfigError) as e:
        prune(model, method, **kwargs)
    assert needle in str(e.value)
    assert_unchanged(model, before)
    assert not (tmp_path / "run").exists()


def test_config_and_keywords_together_are_refused(data, untouched):
    config = PruneConfig(method="l1", macs_reduction=0.5)
    with pytest.raises(ConfigError, match="not both: finetune_epochs given beside config"):
        prune(fresh_model(), config=config, test_set=data[1], finetune_epochs=0)
    with pytest.raises(ConfigError, match="not both: method, rounds given beside config"):
        prune(fresh_model(), "l2", config=config, test_set=data[1], rounds=2)


def test_unknown_config_keys_are_named():
    with pytest.raises(ConfigError, match="macs_reducton"):
        PruneConfig.from_dict({"method": "l1", "macs_reducton": 0.5})
