"""l1-capped's ``allocation="unpruned"``: the per-layer counts are solved once on the unpruned
network and reached in steps, while each round picks the filters by the current weights.

The reference for the counts is an independent path: the one-round run (the default round,
score -> solve -> cut), whose widths the iterated run must end at, and ``round(share * n)``
worked out by hand for a round part way."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from engine_models import randomise

import secateurs
from secateurs.graph import trace
from secateurs.methods import RoundContext, get_method
from secateurs.models import create_model
from secateurs.select import CostModel

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (3, 12, 12)


def net() -> nn.Module:
    """Three convs with BN and a residual-free head: three groups of 12, 16 and 20 channels."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 12, 3, padding=1),
        nn.BatchNorm2d(12),
        nn.ReLU(),
        nn.Conv2d(12, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 20, 3, padding=1),
        nn.BatchNorm2d(20),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(20, 4),
    )
    randomise(model, 3)
    # Uneven layer scales, so that a global ranking gives the layers different counts.
    with torch.no_grad():
        model[3].weight.mul_(torch.linspace(0.2, 2.0, 16).view(-1, 1, 1, 1))
        model[6].weight.mul_(torch.linspace(0.5, 1.0, 20).view(-1, 1, 1, 1))
    return model.eval()


def widths(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


def cut_once(model: nn.Module, rounds: int, allocation: str, shape: tuple[int, ...] = SHAPE) -> nn.Module:
    pruned, _ = secateurs.prune(
        model,
        "l1-capped",
        macs_reduction=0.5,
        rounds=rounds,
        finetune="none",
        bn_recalibration=0,
        latency=False,
        evaluate_before=False,
        input_shape=shape,
        method_options={"allocation": allocation},
    )
    return pruned


def round_context(model: nn.Module, unpruned: nn.Module, round: int, share: float) -> RoundContext:
    example = torch.zeros(1, *SHAPE)
    graph = trace(model, example)
    return RoundContext(
        model,
        graph,
        get_method("l1-capped").make_options({"allocation": "unpruned"}),
        unpruned=unpruned,
        example=example,
        goal=0.5 * share,
        final_goal=0.5,
        share=share,
        reference=CostModel.of(unpruned, example, trace(unpruned, example).calls).macs,
        round=round,
        rounds=3,
    )


def test_three_cuts_end_at_the_one_cut_widths_where_rounds_ranked_afresh_move_them():
    model = net()
    one = widths(cut_once(model, 1, "rounds"))
    assert widths(cut_once(model, 3, "unpruned")) == one
    # The control: the same three cuts ranked afresh each round land elsewhere on this net
    # (the layer cut first scores lower against the others in the next round).
    assert widths(cut_once(model, 3, "rounds")) != one
    assert widths(model) == [12, 16, 20]  # prune works on a copy


def test_a_round_part_way_removes_its_share_of_each_layers_count():
    model = net()
    planned = [w - k for w, k in zip(widths(model), widths(cut_once(model, 1, "rounds")), strict=True)]
    assert sum(planned) > 0
    first = net()
    ctx = round_context(first, model, 1, 5 / 9)
    ctx.goal = 0.5 * 0.2  # the plan's share decides, not goal / final_goal
    get_method("l1-capped").round(ctx)
    removed = [w0 - w for w0, w in zip(widths(model), widths(first), strict=True)]
    assert removed == [round(5 / 9 * n) for n in planned]


def test_a_round_without_its_share_is_refused():
    model = net()
    ctx = round_context(net(), model, 1, 5 / 9)
    ctx.share = None
    with pytest.raises(secateurs.ConfigError, match="round 1 of a fixed allocation needs its share"):
        get_method("l1-capped").round(ctx)


def test_later_rounds_choose_by_the_current_weights():
    """After round 1 a filter of the second conv that the plan would cut is made the largest
    (as fine-tuning might): round 2 keeps it and still removes the layer's planned count."""
    model = net()
    planned = 16 - widths(cut_once(model, 1, "rounds"))[1]
    assert planned >= 2
    current = net()
    get_method("l1-capped").round(round_context(current, model, 1, 5 / 9))
    conv = current[3]
    order = conv.weight.detach().abs().flatten(1).sum(1).argsort()
    weakest = int(order[0])
    with torch.no_grad():
        conv.weight[weakest].mul_(100.0)
        conv.bias[weakest] = 12345.0  # follows its filter through the cut of the conv's inputs
    get_method("l1-capped").round(round_context(current, model, 3, 1.0))
    assert current[3].out_channels == 16 - planned
    assert 12345.0 in current[3].bias.tolist()


def test_a_grouped_conv_ends_at_the_one_cut_widths_without_overshooting():
    """ShuffleNet v1's grouped convs leave each block's group an unprunable remainder that shares
    its layers; the plan's sizes come from the prunable groups only, so the three cuts stop at
    the one cut's widths (the remainder's size once overwrote the group's: 90% instead of 50%)."""
    model = create_model("shufflenet_v1", num_classes=4, in_channels=1).eval()
    shape = (1, 28, 28)
    example = torch.zeros(1, *shape)
    macs = CostModel.of(model, example, trace(model, example).calls).macs
    one = cut_once(model, 1, "rounds", shape)
    three = cut_once(model, 3, "unpruned", shape)
    assert widths(three) == widths(one)
    reduction = 1 - CostModel.of(three, example, trace(three, example).calls).macs / macs
    assert 0.45 <= reduction <= 0.6


def test_the_option_is_checked_and_keeps_the_unpruned_network():
    plan = secateurs.PruneConfig(method="l1-capped", macs_reduction=0.5, method_options={"allocation": "unpruned"}).plan
    assert plan.keeps_unpruned
    with pytest.raises(secateurs.ConfigError, match="allocation must be one of rounds, unpruned, got 'first'"):
        get_method("l1-capped").make_options({"allocation": "first"})
