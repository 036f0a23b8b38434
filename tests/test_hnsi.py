"""HNSI kernel pruning (Zhu & Pei, Appl. Intell. 2022): the index and ``keep`` against hand-computed values, the
bisection against ``count_macs``, the at-least-one-kernel rule per stage, materialisation
against the masked model's outputs, and the whole run through the pipeline and the CLI."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn as nn
from _commands import fast, prune_argv
from engine_models import feature_stack

import secateurs
from secateurs import ConfigError, count_macs
from secateurs.cli import main
from secateurs.graph.masks import MASK
from secateurs.methods import METHODS, RoundContext
from secateurs.methods._hnsi import hnsi, keep, solve_strength
from secateurs.methods._kernels import alive_kernels, kernel_layers, materialize_record
from secateurs.methods.hnsi import HNSIOptions, by_input, hnsi_round, in_groups, in_layers, kernel_saliency
from secateurs.train import trainer

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (3, 32, 32)
FAST = {"batch_size": 64, "progress": False, "max_steps_per_epoch": 2}


# --- the index and keep() -------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 7, 64])
def test_hnsi_of_uniform_and_one_hot_vectors(n):
    assert hnsi(torch.full((n,), 0.3)) == pytest.approx(1.0, abs=1e-12)
    one_hot = torch.zeros(n)
    one_hot[n // 2] = 5.0
    assert hnsi(one_hot) == pytest.approx(1 / n, abs=1e-12)


def test_hnsi_by_hand():
    # ||v||_1 = 6, ||v||_2^2 = 14: 36 / (3 * 14)
    assert hnsi(torch.tensor([1.0, 2.0, 3.0])) == pytest.approx(6 / 7, abs=1e-12)
    assert hnsi(torch.zeros(4)) == 1.0  # all-zero: defined as uniform
    with pytest.raises(ValueError):
        hnsi(torch.zeros(0))


@pytest.mark.parametrize(
    "v, c, lo, expected",
    [
        ([1.0, 1.0, 1.0, 1.0], 1.0, 1, 4),  # c = 1 keeps the effective count: all of a uniform set
        ([0.0, 9.0, 0.0, 0.0], 1.0, 1, 1),  # ... and one of a one-hot set
        ([1.0, 2.0, 3.0], 1.0, 1, 3),  # ceil(18 / 7)
        ([1.0, 2.0, 3.0], 0.5, 1, 2),  # ceil(9 / 7)
        ([1.0, 2.0, 3.0], 1e-9, 1, 1),  # c -> 0: the lower bound
        ([1.0, 2.0, 3.0], 1e-9, 0, 1),  # ... which the ceiling keeps at 1 for any c > 0
        ([1.0, 2.0, 3.0], 0.0, 0, 0),  # no rule and c = 0: nothing
        ([1.0, 2.0, 3.0], 0.0, 1, 1),
        ([1.0, 2.0, 3.0], 100.0, 1, 3),  # never more than n
        ([0.0, 0.0], 0.5, 1, 1),
    ],
)
def test_keep_at_the_ends_of_its_range(v, c, lo, expected):
    assert keep(torch.tensor(v), c, lo) == expected


def test_solve_strength_finds_the_largest_feasible_strength():
    steps = [0.1, 0.25, 0.6, 0.9]  # cost = 10 + 10 * (steps passed)

    def cost(c: float) -> float:
        return 10 + 10 * sum(c >= s for s in steps)

    c, value, reached = solve_strength(cost, 30, 1.0)
    assert reached and value == 30 and c == pytest.approx(0.6, abs=1e-12) and c < 0.6
    assert solve_strength(cost, 100, 1.0) == (1.0, 50, True)  # nothing to prune
    c, value, reached = solve_strength(cost, 5, 1.0)
    assert not reached and value == 10 and c < 1e-9


# --- a model's stages -----------------------------------------------------------------------


def fresh_model(name: str = "test_resnet") -> nn.Module:
    torch.manual_seed(0)
    return secateurs.create_model(name, num_classes=10, in_channels=3)


def plant(model: nn.Module, columns: dict[str, list[int]], scale: float = 1e-3) -> nn.Module:
    """Make some input-channel groups weak, so that a layer-wide selection empties them."""
    with torch.no_grad():
        for name, cols in columns.items():
            model.get_submodule(name).weight[:, cols] *= scale
    return model


def sparse_reduction(model: nn.Module, base: int, shape=SHAPE) -> float:
    return 1 - count_macs(model, shape, sparse=True) / base


def run_stage(model: nn.Module, goal: float, stage: int, shape=SHAPE, last: bool = False, **options):
    """One stage on ``model``; the last stage of a run aims at the model as materialised."""
    example = torch.zeros(1, *shape, dtype=next(model.parameters()).dtype)
    base = count_macs(model, shape)
    ctx = RoundContext(
        model,
        None,
        HNSIOptions(**options),
        example=example,
        goal=goal,
        reference=base,
        round=stage,
        rounds=stage if last else 3,
    )
    return hnsi_round(ctx), base


def masks_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: m._buffers[MASK].clone() for n, m in model.named_modules() if m._buffers.get(MASK) is not None}


@pytest.mark.parametrize("stage", [1, 2])
@pytest.mark.parametrize("goal", [0.2, 0.45, 0.7])
def test_bisection_reaches_the_target(stage, goal):
    model = fresh_model()
    outcome, base = run_stage(model, goal, stage)
    achieved = sparse_reduction(model, base)
    assert goal <= achieved <= goal + 0.01
    assert (
        outcome.details["predicted_sparse_macs"]
        == outcome.details["sparse_macs"]
        == count_macs(model, SHAPE, sparse=True)
    )
    assert (
        outcome.note is None and outcome.removed == outcome.details["kernels_before"] - outcome.details["kernels_after"]
    )
    assert outcome.details["materialized_sparse_macs"] is None  # not the last stage


# test_vgg at the default high_strength=0.6 lands at 61.5% (one high-level group of its 16-32
# channel convs, with the producer filter materialisation removes, is ~2% of its MACs, too coarse
# for the 1-point window); at 1.0 the stage's granularity is the kernel's.
@pytest.mark.parametrize("name, options", [("test_vgg", {"high_strength": 1.0}), ("test_mobilenet_v2", {})])
def test_the_last_stage_reaches_the_target_on_the_materialised_model(name, options):
    """Materialising removes kernels the masks kept (unread filters, constants' readers): the
    last stage counts them, so the target holds for the model the run returns."""
    model = fresh_model(name)
    outcome, base = run_stage(model, 0.6, 2, last=True, **options)
    masked = sparse_reduction(model, base)
    record = materialize_record(model, torch.zeros(1, *SHAPE))
    assert (
        record["sparse_macs"][1] == outcome.details["materialized_sparse_macs"] == count_macs(model, SHAPE, sparse=True)
    )
    assert 0.6 <= sparse_reduction(model, base) <= 0.61 and masked < 0.6


def test_the_predicted_cost_is_count_macs_at_every_strength():
    model = fresh_model()
    layers = kernel_layers(model, torch.zeros(1, *SHAPE))
    alive = {x.name: alive_kernels(x.conv) for x in layers}
    sal = {x.name: kernel_saliency(x.conv.weight) for x in layers}
    base = count_macs(model, SHAPE, sparse=True)
    fixed = base - sum(int(alive[x.name].sum()) * x.cost for x in layers)
    for plan in (in_groups(layers, alive, sal), in_layers(layers, alive, sal, restore=frozenset(alive))):
        for c in (0.05, 0.3, 0.8, plan.c_max):
            masked = fresh_model()
            secateurs.graph.apply_kernel_masks(masked, plan.select(c))
            assert fixed + plan.cost(c) == count_macs(masked, SHAPE, sparse=True)
        assert fixed + plan.cost(plan.c_max) == base


def test_stage_one_never_empties_a_group():
    """Even at a goal it cannot reach: every group at one kernel, and the note says so."""
    model = plant(fresh_model(), {"stages.2.0.conv2.0": [0, 1, 2], "stages.0.0.conv1.0": [3]})
    outcome, base = run_stage(model, 0.97, 1, at_least_one="none")
    for x in kernel_layers(model, torch.zeros(1, *SHAPE)):
        assert by_input(x.conv.kernel_mask, x.conv.groups).any(1).all(), x.name
    assert outcome.details["empty_groups"] == {}
    assert "cannot reach 97.0%" in outcome.note and f"{100 * sparse_reduction(model, base):.2f}%" in outcome.note


LOW = ["stem.0", "stages.0.0.conv1.0", "stages.0.0.conv2.0"]
HIGH_PLANT = {"stages.2.0.conv2.0": [0, 1, 2, 3], "stages.1.0.conv2.0": [5]}
LOW_PLANT = {"stages.0.0.conv2.0": [1, 2], "stages.0.0.conv1.0": [4]}


def empty_groups(masks: dict[str, torch.Tensor]) -> dict[str, int]:
    return {n: int((~m.any(0)).sum()) for n, m in masks.items() if not m.any(0).all()}  # groups = 1 here


@pytest.mark.parametrize("rule", ["stage", "none", "all"])
def test_stage_two_empties_groups_only_where_the_rule_allows(rule):
    model = plant(fresh_model(), {**HIGH_PLANT, **LOW_PLANT})
    outcome, base = run_stage(model, 0.6, 2, at_least_one=rule, low_layers=",".join(LOW), last=False)
    empty = empty_groups(masks_of(model))
    assert outcome.details["low_layers"] == LOW and outcome.details["empty_groups"] == empty
    if rule == "all":
        assert empty == {}
    else:
        assert empty.get("stages.2.0.conv2.0", 0) >= 4 and empty.get("stages.1.0.conv2.0", 0) >= 1
    assert bool(set(empty) & set(LOW)) == (rule == "none")
    assert 0.6 <= sparse_reduction(model, base) <= 0.61  # the kernels given back are paid for


def test_stage_two_keeps_stage_one_masks_and_low_fraction_counts_in_forward_order():
    model = fresh_model()
    run_stage(model, 0.3, 1)
    first = masks_of(model)
    outcome, _ = run_stage(model, 0.6, 2, low_fraction=0.34)
    second = masks_of(model)
    assert all(not (second[n] & ~first[n]).any() for n in second)  # nothing comes back
    names = [x.name for x in kernel_layers(model, torch.zeros(1, *SHAPE))]
    assert names[0] == "stem.0" and outcome.details["low_layers"] == names[:3]  # 9 convs * 0.34 -> 3


def test_unknown_low_layer_is_named():
    with pytest.raises(ConfigError, match=r"'stages.0.0.conv9.0'.*Did you mean"):
        run_stage(fresh_model(), 0.5, 2, low_layers=["stages.0.0.conv9.0"])


# --- materialisation ------------------------------------------------------------------------


def random_bn(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.5
            m.bias.data = torch.rand(m.num_features, generator=g) + 0.5  # constants survive the ReLU
            m.running_mean = torch.randn(m.num_features, generator=g)
            m.running_var = torch.rand(m.num_features, generator=g) + 0.5
    return model


def rows(mask: torch.Tensor, empty_along: int) -> set[int]:
    return set((~mask.any(empty_along)).nonzero().flatten().tolist())


def materialized_against_masked(model: nn.Module, shape: tuple[int, ...]):
    """The masked float64 ``model``'s outputs on four random inputs, the record of materialising
    it in place, and its outputs on the same inputs after."""
    x = torch.randn(4, *shape, dtype=torch.float64)
    model.eval()
    with torch.no_grad():
        ref = model(x)
    record = materialize_record(model, x[:1])
    with torch.no_grad():
        return ref, record, model(x)


@pytest.mark.parametrize("kernel", [1, 3])
def test_materialized_outputs_equal_the_masked_outputs(kernel):
    torch.manual_seed(0)
    model = random_bn(feature_stack(kernel, in_channels=1)).double()
    with torch.no_grad():
        model.c.weight[:, [2, 6]] *= 1e-3  # groups of the high-level c: dropped, so b's filters 2, 6 are unread
        model.b.weight[5] *= 1e-3  # b's filter 5: emptied, its constant folded into c
    shape = (1, 8, 8)
    # Without the rule, so that b (low-level) may lose a whole filter (with it, see the next test).
    run_stage(model, 0.5, 2, shape, low_layers=["b"], last=True, high_level="kernels", at_least_one="none")
    masks = masks_of(model)
    ref, record, out = materialized_against_masked(model, shape)
    unread, constant = rows(masks["c"], 0), rows(masks["b"], 1)  # b's channels c no longer reads; b's empty filters
    gone, folded = unread | constant, constant - unread
    assert {2, 6} <= unread and 5 in folded and not rows(masks["b"], 0)  # no group of b emptied here
    assert record["inputs_removed"] == {"c": len(gone)}
    assert record["outputs_removed"] == {"b": len(gone), "b_bn": len(gone)}
    assert record["filters_folded"] == {"b": len(folded)}
    # Dense MACs fall by exactly what the removed channels account for: 8 x 8 positions per conv.
    fall = 64 * (9 * 6 * len(gone) + kernel * kernel * 5 * len(gone))
    assert record["dense_macs"][0] - record["dense_macs"][1] == fall
    assert record["dense_macs"][1] == count_macs(model, shape)
    assert record["sparse_macs"][1] == count_macs(model, shape, sparse=True) <= record["sparse_macs"][0]
    if kernel == 1:  # the fold is exact for a 1x1 consumer ...
        assert record["exact"]
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    else:  # ... and for a zero-padded 3x3 one away from the one-pixel border
        assert not record["exact"] and record["approximate_at"] == ["c"]
        inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
        torch.testing.assert_close(out[inner], ref[inner], rtol=0, atol=1e-12)
    assert not any(MASK in m._buffers for m in model.modules())


@pytest.mark.parametrize("stage", [1, 2])
def test_low_level_convs_keep_every_filter_so_the_next_keeps_its_inputs(stage):
    """A low-level filter with no kernel left is a constant that materialisation folds forward,
    and the conv after it would stop reading that channel. Under the rule, a low-level conv gives
    an emptied filter its strongest kernel back (and pays for it: the target is still met); a
    high-level conv does not."""
    model = fresh_model()
    first, second = LOW[1], LOW[2]  # stages.0.0.conv1.0 feeds stages.0.0.conv2.0 only
    high = "stages.2.0.conv1.0"
    with torch.no_grad():
        for name in (first, high):
            model.get_submodule(name).weight[[1, 4]] *= 1e-4  # two filters far below the rest
    strongest = {n: model.get_submodule(n).weight.detach().abs().sum((2, 3))[[1, 4]].argmax(1) for n in (first, high)}
    # high_level="kernels": the high-level conv's weak filters go kernel by kernel in stage 2 too.
    goal = 0.6 if stage == 2 else 0.35
    outcome, base = run_stage(model, goal, stage, low_layers=",".join(LOW), high_level="kernels")
    masks = masks_of(model)
    assert masks[first].any(1).all()  # every filter of the low-level conv still computes
    assert masks[first][[1, 4]].sum(1).tolist() == [1, 1]  # each by its strongest kernel alone
    assert masks[first][[1, 4]].float().argmax(1).tolist() == strongest[first].tolist()
    assert not masks[high][[1, 4]].any()  # the high-level conv's weak filters are emptied
    assert outcome.details["empty_filters"].get(high) >= 2 and first not in outcome.details["empty_filters"]
    assert goal <= sparse_reduction(model, base) <= goal + 0.01

    record = materialize_record(model, torch.zeros(1, *SHAPE))
    assert second not in record["inputs_removed"], record["inputs_removed"]


def test_high_level_convs_keep_whole_groups_ranked_by_their_norms():
    """Stage 2's default in high-level convs: each group is kept whole or dropped whole, the
    dropped ones are the weakest by norm, and low-level convs keep every input channel."""
    model = plant(fresh_model(), HIGH_PLANT)
    outcome, base = run_stage(model, 0.5, 2, low_layers=",".join(LOW))
    masks = masks_of(model)
    for name, m in masks.items():
        per_group = by_input(m, model.get_submodule(name).groups)
        if name in LOW:
            assert per_group.any(1).all(), name
        else:
            assert (per_group.all(1) | ~per_group.any(1)).all(), name  # whole groups only
    for name, cols in HIGH_PLANT.items():
        dropped = set((~masks[name].any(0)).nonzero().flatten().tolist())
        assert set(cols) <= dropped, name
    assert 0.5 <= sparse_reduction(model, base) <= 0.51


def test_groups_dropped_in_high_level_convs_are_removed_exactly():
    """In a chain, channels the high-level conv stops reading go with their producer: the dense
    MACs fall, and the materialised model gives the masked one's outputs."""
    torch.manual_seed(0)
    model = random_bn(feature_stack(1, in_channels=1)).double()
    with torch.no_grad():
        model.c.weight[:, [2, 6]] *= 1e-3
    shape = (1, 8, 8)
    run_stage(model, 0.5, 2, shape, low_layers=["b"], last=True)
    unread = rows(masks_of(model)["c"], 0)
    ref, record, out = materialized_against_masked(model, shape)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    assert {2, 6} <= unread and record["inputs_removed"]["c"] >= len(unread)
    assert record["dense_macs"][0] - record["dense_macs"][1] >= 64 * (9 * 6 + 5) * len(unread)


# --- the pipeline ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data():
    return (
        secateurs.load_dataset("synthetic", "train", num_samples=128),
        secateurs.load_dataset("synthetic", "test", num_samples=128),
    )


@pytest.fixture
def spy(monkeypatch):
    """Records the masks and weights the model holds when the pipeline finalizes it."""
    seen = {}
    spec = METHODS["hnsi"]

    def finalize(model, example):
        seen["masks"] = masks_of(model)
        seen["weights"] = {n: model.get_submodule(n).weight.detach().clone() for n in seen["masks"]}
        return spec.finalize(model, example)

    monkeypatch.setitem(METHODS, "hnsi", dataclasses.replace(spec, finalize=finalize))
    return seen


@pytest.fixture(scope="module")
def hnsi_run(data):
    model = plant(fresh_model(), HIGH_PLANT)
    return model, *secateurs.prune(
        model,
        "hnsi",
        macs_reduction=0.5,
        finetune_epochs=2,
        train_set=data[0],
        test_set=data[1],
        finetune_train=FAST,
        latency=False,
    )


def test_pipeline_reaches_the_sparse_target_and_records_the_dense_macs(hnsi_run, tmp_path):
    model, pruned, result = hnsi_run
    assert [r.target for r in result.rounds] == [0.25, 0.5] and [r.finetune_epochs for r in result.rounds] == [1, 1]
    r1, r2 = result.rounds  # stage 1 aims at the masked model, stage 2 at the materialised one
    assert r1.target <= r1.achieved <= r1.target + 0.01 and r2.achieved <= 0.51
    assert r2.details["materialized_sparse_macs"] == result.after["sparse_macs"]
    base = count_macs(model, SHAPE)
    assert result.before["sparse_macs"] == result.before["macs"] == base
    assert result.after["sparse_macs"] == count_macs(pruned, SHAPE, sparse=True)
    assert result.achieved == pytest.approx(1 - result.after["sparse_macs"] / base)
    assert abs(result.achieved - 0.5) <= 0.01 and result.within_tolerance
    f = result.finalized
    assert f["dense_macs"] == [base, result.after["macs"]] and result.after["macs"] == count_macs(pruned, SHAPE)
    assert f["inputs_removed"]["stages.2.0.conv2.0"] >= 4 and f["inputs_removed_total"] == sum(
        f["inputs_removed"].values()
    )
    assert result.after["macs"] < base
    assert json.loads(json.dumps(result.to_dict()))["finalized"] == f
    assert "kernel-sparse MACs" in result.summary()
    assert not any(MASK in m._buffers for m in pruned.modules())
    secateurs.save(pruned, tmp_path / "m.safetensors")
    loaded = secateurs.load(tmp_path / "m.safetensors")
    x = torch.randn(2, *SHAPE)
    assert torch.equal(loaded.eval()(x), pruned.eval()(x))


def finetuned_hnsi(data, macs_reduction: float, finetune_epochs: int, **method_options):
    """hnsi on a fresh ``test_resnet`` with fine-tuning on the training split (no evaluation)."""
    return secateurs.prune(
        fresh_model(),
        "hnsi",
        macs_reduction=macs_reduction,
        finetune_epochs=finetune_epochs,
        train_set=data[0],
        finetune_train=FAST,
        latency=False,
        input_shape=SHAPE,
        method_options=method_options,
    )


def test_masks_are_held_through_finetuning(data, spy):
    finetuned_hnsi(data, 0.5, 2)
    start = fresh_model()
    for name, mask in spy["masks"].items():
        w = spy["weights"][name]
        assert not w[~mask].any(), name  # masked: exactly zero after two fine-tunings
        assert w[mask].flatten(1).ne(0).any(1).all()
        assert not torch.equal(w[mask], start.get_submodule(name).weight.detach()[mask])  # the rest trained


@pytest.mark.parametrize(
    "options, rounds",
    [({}, 2), ({"single_stage": True}, 1), ({"at_least_one": "none"}, 2), ({"at_least_one": "all"}, 2)],
)
def test_ablation_switches(options, rounds, spy):
    model = plant(fresh_model(), {**HIGH_PLANT, **LOW_PLANT})
    _, result = secateurs.prune(
        model,
        "hnsi",
        macs_reduction=0.6,
        finetune="none",
        input_shape=SHAPE,
        latency=False,
        method_options={**options, "low_layers": LOW},
    )
    assert len(result.rounds) == rounds and abs(result.achieved - 0.6) <= 0.01
    empty = empty_groups(spy["masks"])
    high = set(empty) - set(LOW)
    assert bool(high) == (options.get("at_least_one") != "all")
    assert bool(set(empty) & set(LOW)) == (options.get("at_least_one") == "none")


def test_stage_share_and_epochs(data):
    _, result = finetuned_hnsi(data, 0.6, 3, stage1_share=0.3, stage1_epochs=2)
    r1, r2 = result.rounds
    assert (r1.target, r1.finetune_epochs, r2.target, r2.finetune_epochs) == (pytest.approx(0.18), 2, 0.6, 1)
    assert r1.target <= r1.achieved <= r1.target + 0.01


@pytest.mark.parametrize(
    "options, needle",
    [
        ({"params_reduction": 0.5}, "kernel-sparse MACs"),
        ({"macs_reduction": 0.5, "scope": "layer"}, "scope 'layer'"),
        ({"macs_reduction": 0.5, "rounds": 3}, "rounds=3"),
        ({"macs_reduction": 0.5, "method_options": {"norm": "l3"}}, r"l1, l2.*'l3'"),
        ({"macs_reduction": 0.5, "method_options": {"at_least_one": "some"}}, r"stage, none, all.*'some'"),
        (
            {"macs_reduction": 0.5, "finetune": "tft", "finetune_epochs": 2, "method_options": {"stage1_epochs": 3}},
            "stage1_epochs=3",
        ),
        ({"macs_reduction": 0.5, "method_options": {"single_stage": True, "stage1_epochs": 1}}, "single_stage"),
        ({"macs_reduction": 0.5, "method_options": {"stage1_share": 1.0}}, "stage1_share"),
    ],
)
def test_refusals(options, needle):
    with pytest.raises(ConfigError, match=needle):
        secateurs.prune(fresh_model(), "hnsi", input_shape=SHAPE, latency=False, **{"finetune": "none", **options})


class Killed(Exception):
    pass


def test_resume_in_stage_one_finetuning_matches_an_uninterrupted_run(data, tmp_path, monkeypatch):
    """Masks are not saved: the resumed run takes them back from the zero kernels."""
    options = dict(
        macs_reduction=0.5, finetune_epochs=4, finetune_train=FAST, latency=False, train_set=data[0], test_set=data[1]
    )
    whole, whole_report = secateurs.prune(fresh_model(), "hnsi", run_dir=tmp_path / "whole", **options)
    real = trainer._write_epoch

    def dying(*args, **kwargs):
        real(*args, **kwargs)
        raise Killed

    monkeypatch.setattr(trainer, "_write_epoch", dying)
    with pytest.raises(Killed):
        secateurs.prune(fresh_model(), "hnsi", run_dir=tmp_path / "cut", **options)
    monkeypatch.setattr(trainer, "_write_epoch", real)
    resumed, report = secateurs.prune(fresh_model(), "hnsi", run_dir=tmp_path / "cut", resume=True, **options)
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert report.finalized == whole_report.finalized and report.after == whole_report.after


def test_cli(trained_checkpoint, tmp_path):
    out = tmp_path / "p"
    low = ["--method-option", "at_least_one=all", "--method-option", "low_layers=stem.0,stages.0.0.conv1.0"]
    assert (
        main(prune_argv(trained_checkpoint, out, "--finetune-epochs", "2", *low, *fast(1), method="hnsi", macs=0.5))
        == 0
    )
    config = json.loads((out / "config.json").read_text())
    assert config["rounds"] == 2 and config["epochs_per_round"] == [1, 1]
    assert config["method_options"]["low_layers"] == ["stem.0", "stages.0.0.conv1.0"]
    m = json.loads((out / "metrics.json").read_text())
    assert m["within_tolerance"] and m["rounds"][1]["details"]["low_layers"] == ["stem.0", "stages.0.0.conv1.0"]
    pruned = secateurs.load(out / "model.safetensors")
    assert count_macs(pruned, SHAPE) == m["after"]["macs"] == m["finalized"]["dense_macs"][1]
    assert count_macs(pruned, SHAPE, sparse=True) == m["after"]["sparse_macs"]
    assert math.isclose(m["achieved"], 1 - m["after"]["sparse_macs"] / m["before"]["macs"])


def test_a_model_with_zero_kernels_is_cut_relative_to_its_kernel_sparse_macs(data):
    """hnsi's target is on kernel-sparse MACs, so the reduction is of the input model's
    kernel-sparse MACs: here a quarter of most kernels are already zero, and 40% means 40% of
    what is left (it was of the dense MACs, which overstated the reduction)."""
    model = fresh_model()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and m.groups == 1 and m.in_channels > 3:
                m.weight[::2, ::2] = 0
    sparse0 = count_macs(model, SHAPE, sparse=True)
    assert sparse0 < 0.9 * count_macs(model, SHAPE)
    pruned, result = secateurs.prune(
        model, "hnsi", macs_reduction=0.4, finetune_epochs=0, train_set=data[0], latency=False, input_shape=SHAPE
    )
    assert result.before["sparse_macs"] == sparse0
    assert result.achieved == pytest.approx(1 - count_macs(pruned, SHAPE, sparse=True) / sparse0)
    assert abs(result.achieved - 0.4) <= 0.01
