"""``round_to``: every layer a plan narrows keeps a width that is a multiple of N.

The reference is the pruned model itself: the solver's units are cut with the engine and
every producer layer's width is read off the modules (a multiple of N, or untouched), the
MACs are measured with count_macs (the target met, the prediction exact). A plan with
``round_to=1`` on the same scores must narrow some layer to a width that is not a multiple
of N, or the check would prove nothing.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from _scoring import scored_zoo_model

import secateurs
from secateurs import ConfigError, count_macs
from secateurs.cli import build_parser
from secateurs.commands.prune import prune_options
from secateurs.graph import remove_units
from secateurs.pipeline import PruneConfig
from secateurs.select import floors_for, solve

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (3, 32, 32)
X = torch.zeros(1, *SHAPE)
#: (model, N): the tiny test_* models have 8..32-channel layers, too narrow to lose half their
#: MACs in steps of 8 above the 10% floor, so they run with N = 4 and 3.
CASES = [(name, n) for name in ("test_resnet", "test_vgg", "test_mobilenet_v2", "test_shufflenet_v2") for n in (4, 3)]
CASES += [("resnet20", 8), ("mobilenet_v2", 8)]


def setup(name: str):
    """A zoo model (never modified), its trace, its l1 unit scores and its cost model."""
    return scored_zoo_model(name, SHAPE[0])


def widths(model: nn.Module) -> dict[str, int]:
    """Every conv's, linear's and BN's output width, read off the modules."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            out[name] = m.out_channels
        elif isinstance(m, nn.Linear):
            out[name] = m.out_features
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            out[name] = m.num_features
    return out


def cut(name: str, target: float, scope: str, round_to: int):
    model, graph, scores, cost = setup(name)
    plan = solve(graph, scores, cost, target, "macs", scope, floors_for(cost.widths, 0.1), round_to=round_to)
    pruned = copy.deepcopy(model)
    remove_units(pruned, graph, plan.units, X)
    return model, plan, pruned


def off_grid(before: dict[str, int], after: dict[str, int], n: int) -> dict[str, tuple[int, int]]:
    return {k: (before[k], w) for k, w in after.items() if w != before[k] and w % n}


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("name, round_to", CASES)
def test_every_narrowed_layer_is_a_multiple_and_the_target_is_met(name: str, round_to: int, scope: str) -> None:
    model, plan, pruned = cut(name, 0.5, scope, round_to)
    before, after = widths(model), widths(pruned)
    assert off_grid(before, after, round_to) == {}
    assert any(after[k] < before[k] for k in before), "nothing was pruned: a vacuous check"
    original, got = count_macs(model, SHAPE), count_macs(pruned, SHAPE)
    assert plan.reached and plan.note is None
    assert got <= 0.5 * original
    assert got == plan.predicted["macs"]
    if scope == "global" and not name.startswith("test_"):
        assert got >= 0.49 * original  # within a point of the target: the slack search found small steps


@pytest.mark.parametrize("name, round_to", CASES)
def test_without_round_to_some_layer_is_off_the_grid(name: str, round_to: int) -> None:
    """The constraint bites: the same scores and target without it leave odd widths."""
    model, _, pruned = cut(name, 0.5, "global", 1)
    assert off_grid(widths(model), widths(pruned), round_to)


def test_an_unreachable_target_says_so_and_stays_on_the_grid() -> None:
    """test_resnet's 8-channel layers cannot be cut in steps of 8 (the 10% floor keeps one):
    the plan falls short, says why, and still narrows only to multiples of 8."""
    model, plan, pruned = cut("test_resnet", 0.5, "global", 8)
    assert not plan.reached and "instead of 50.0%" in plan.note
    assert off_grid(widths(model), widths(pruned), 8) == {} and widths(pruned) != widths(model)


@pytest.mark.parametrize("value", [0, -8, 2.5, True])
def test_bad_round_to_is_refused_with_the_way_out(value) -> None:
    with pytest.raises(ConfigError, match="round_to"):
        PruneConfig(method="l1", macs_reduction=0.5, round_to=value)


def test_prune_honours_round_to_end_to_end() -> None:
    torch.manual_seed(0)
    model = secateurs.create_model("test_resnet", num_classes=10, in_channels=3)
    pruned, result = secateurs.prune(
        model,
        "l1",
        macs_reduction=0.5,
        finetune="none",
        latency=False,
        evaluate_before=False,
        round_to=4,
        input_shape=SHAPE,
    )
    before, after = widths(model), widths(pruned)
    assert off_grid(before, after, 4) == {} and after != before
    assert count_macs(pruned, SHAPE) <= 0.5 * count_macs(model, SHAPE)


def test_cli_flag_and_recipe_key_set_the_field() -> None:
    args = build_parser().parse_args(
        ["prune", "--from", "x.safetensors", "--out", "run", "--macs-reduction", "0.5", "--round-to", "8"]
    )
    assert prune_options(args)["round_to"] == 8
    assert PruneConfig.from_dict({"method": "l1", "macs_reduction": 0.5, "round_to": 8}).round_to == 8
