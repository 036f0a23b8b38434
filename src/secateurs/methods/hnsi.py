"""HNSI two-stage progressive kernel pruning with adjustable input channels (Zhu & Pei,
Applied Intelligence 2022, doi:10.1007/s10489-021-02932-z; see docs/methods.md). Kernels
``W[j, i]`` are masked, not channels removed, until the end.

* Stage 1 (round 1), in groups: every input channel's kernels ``{W[j, i]: all j}`` keep
  ``keep(v; c)`` of themselves (:mod:`._hnsi`), the strongest by saliency ``||W[j, i]||_p``,
  so every input channel is still read. Fine-tuning follows with the masks held.
* Stage 2 (round 2), in layers: every conv keeps ``keep(v; c)`` of all its remaining kernels.
  In low-level layers (the first ``low_fraction`` of the convs in forward order, or
  ``low_layers``) a group left empty gets its strongest kernel back; in high-level layers
  it stays empty, and the layer stops reading that input channel. Fine-tuning again.
  In both stages a low-level filter left with no kernel gets its strongest back too: an
  empty filter is a constant that materialisation folds forward, and the low-level conv
  reading it would lose that input channel (two filters of vgg16's features.0 did, at 50%,
  before this rule).
  How a high-level conv decides (``high_level="groups"``): HNSI over its input-channel
  groups' norms (a group's norm: the sum of its live kernels' saliencies) gives
  ``keep(norms; high_strength * c)`` groups, the strongest kept whole, the others dropped
  whole. ``high_strength`` (default 0.6) scales the stage's one strength ``c`` for these
  layers: HNSI over group norms is near 1 (norms of 16-64 kernels average out), so at
  ``high_strength = 1`` the cut lands mostly on scattered kernels and few channels go;
  0.6 moves stage 2's cut to whole channels of the high-level convs (at 50% kernel-sparse
  MACs, 22.6% fewer dense MACs on resnet56 and 30.2% on vgg16, b64 1.05x and 1.40x faster:
  ``benchmarks/results/hnsi_structure.md``), and the low-level convs keep every input
  channel. Two other readings were tried in development runs (not kept in a committed
  result) and dropped: the layer's kernel ``keep`` spent on whole groups (kernel and group
  HNSI barely differ after stage 1, so few channels went), and stage 2 cutting only the
  high-level convs (the paper's stage 2 prunes every conv).
* Then :func:`~secateurs.graph.materialize`: input channels read by no consumer go with
  their producer filter and BN, filters with no kernel left are folded forward.

``c`` is bisected per stage on the kernel-sparse MACs (predicted from kernels kept per conv
times the MACs of one of its kernels, which is what ``count_macs(sparse=True)`` counts), so
the pipeline's MACs target is a kernel-sparse one. The last stage aims at the model as it
will be materialised (which also drops the kernels of unread and constant filters), checked
by materialising copies; the record gives the dense MACs after materialisation too. Depthwise convs (one kernel per filter) and linear layers are left alone.
A round's ``channels_removed`` counts kernels.
"""

from __future__ import annotations

import difflib
import math
import time
from dataclasses import dataclass

import torch

from .._types import check_field_types
from ..errors import ConfigError
from ..graph import apply_kernel_masks
from ..measure import count_macs
from ..measure.macs import kernels_per_layer
from ..select import LayerScores
from ._context import RoundContext, RoundOutcome, ScoreContext
from ._hnsi import solve_strength
from ._hnsi_plans import StagePlan, by_input, in_groups, in_layers
from ._hnsi_target import kernel_sparse_target, materialisation_note, sparse_macs
from ._kernels import (
    KernelLayer,
    alive_kernels,
    held_masks,
    kernel_layers,
    materialize_record,
    materialized_sparse_macs,
    multi_kernel,
    restore_masks,
)
from ._registry import register_method

NORMS = ("l1", "l2")
#: Where the at-least-one-kernel rule applies: "stage" as in the paper (stage 1, and the
#: low-level layers of stage 2), "none" nowhere, "all" in every layer of stage 2 as well.
RULES = ("stage", "none", "all")
HIGH_LEVEL = ("groups", "kernels")


@dataclass(frozen=True)
class HNSIOptions:
    norm: str = "l1"  # kernel saliency ||W[j, i]||_p: "l1" or "l2"
    low_fraction: float = 0.5  # the first this share of the prunable convs (forward order) are low-level
    #: Low-level convs by name (overrides low_fraction); from the CLI, names joined by commas.
    low_layers: list[str] | str | None = None
    stage1_share: float = 0.5  # share of the total MACs reduction reached by stage 1
    #: Fine-tuning epochs after stage 1, out of finetune_epochs (the rest follow stage 2);
    #: None splits them evenly (stage 2 gets the odd one).
    stage1_epochs: int | None = None
    single_stage: bool = False  # the ablation: stage 2 alone, at the whole target, one fine-tuning
    #: "stage", "none" or "all" (RULES). In stage 1 the ceiling in keep() already leaves every
    #: group a kernel whenever c > 0, so "none" acts on stage 2's low-level layers. Where the
    #: rule applies, a filter left with no kernel also gets its strongest back (both stages).
    #: "all" rules the high-level convs too, and the rule wins: they keep every input group, so
    #: ``high_level`` and ``high_strength`` change nothing (the ablation "hnsi-rule-everywhere"
    #: of benchmarks/prune_kernels.py).
    at_least_one: str = "stage"
    #: How stage 2 prunes the high-level convs: "groups" keeps ``keep`` of their input-channel
    #: groups (ranked by the groups' norms) and drops the rest whole, so the layer stops reading
    #: those channels and they can be removed; "kernels" selects kernels layer-wide as in the
    #: low-level convs, minus the rule (the reading of the first version, which almost never
    #: emptied a group: 0-3 input channels removed on resnet56 and vgg16 at 50-75%).
    high_level: str = "groups"
    #: With high_level="groups": the high-level convs keep ``keep(group norms; high_strength * c)``
    #: groups, c being the stage's one strength. Below 1 it moves stage 2's cut from kernels
    #: scattered over the low-level convs to whole input channels of the high-level ones, the
    #: only cut that lowers dense MACs (at 50% kernel-sparse MACs, 0.6 gives 22.6% fewer dense
    #: MACs on resnet56; see the module docstring).
    high_strength: float = 0.6

    def __post_init__(self) -> None:
        if isinstance(self.low_layers, str):
            object.__setattr__(self, "low_layers", [n.strip() for n in self.low_layers.split(",") if n.strip()])
        check_field_types(self, "hnsi option")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.at_least_one not in RULES:
            raise ValueError(f"at_least_one must be one of {', '.join(RULES)}, got {self.at_least_one!r}")
        if self.high_level not in HIGH_LEVEL:
            raise ValueError(f"high_level must be one of {', '.join(HIGH_LEVEL)}, got {self.high_level!r}")
        if not 0.0 < self.high_strength <= 1.0:
            raise ValueError(f"high_strength must be in (0, 1], got {self.high_strength!r}")
        if not 0.0 <= self.low_fraction <= 1.0:
            raise ValueError(f"low_fraction must be in [0, 1], got {self.low_fraction!r}")
        if not 0.0 < self.stage1_share < 1.0:
            raise ValueError(f"stage1_share must be strictly between 0 and 1, got {self.stage1_share!r}")
        if self.stage1_epochs is not None and (self.stage1_epochs < 0 or self.single_stage):
            raise ValueError(
                f"stage1_epochs must be a non-negative integer of a two-stage run, got "
                f"{self.stage1_epochs!r}" + (" with single_stage" if self.single_stage else "")
            )


def kernel_saliency(weight: torch.Tensor, norm: str = "l1") -> torch.Tensor:
    """``||W[j, i]||_p`` per kernel, shape ``weight.shape[:2]``."""
    w = weight.detach().flatten(2).double().cpu()
    return w.abs().sum(-1) if norm == "l1" else w.square().sum(-1).sqrt()


def low_layers(layers: list[KernelLayer], options: HNSIOptions) -> list[str]:
    names = [layer.name for layer in layers]
    if options.low_layers is None:
        return names[: math.floor(options.low_fraction * len(names) + 0.5)]
    for name in options.low_layers:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ConfigError(
                f"hnsi low_layers: {name!r} is not a conv with several kernels per filter.{hint} "
                f"Those of this model are: {', '.join(names)}"
            )
    return list(options.low_layers)


def check_low_layers(model: torch.nn.Module, example: torch.Tensor, options: HNSIOptions) -> None:
    """Refuses ``low_layers`` names that are not convs of ``model`` before the run reads any data."""
    if options.low_layers is not None:
        low_layers(kernel_layers(model, example), options)


def _empty_groups(layer: KernelLayer, mask: torch.Tensor) -> int:
    return int((~by_input(mask, layer.conv.groups).any(1)).sum())


def _through_materialisation(
    ctx: RoundContext, plan: StagePlan, fixed: int, target: float, c: float, cost: float, steps: int = 10
) -> tuple[float, float, int]:
    """The last stage aims at the materialised model: materialising also removes the kernels of
    filters no kernel reads any more, and of those reading a folded constant, so the masks may
    keep more than ``target``. The kernel-sparse MACs after materialising never decrease with
    the masks' budget (the masks grow with it), so the budget is bisected too; each step
    materialises a copy. Returns ``(c, masked cost, materialised sparse MACs)``."""

    def at(allowed: float) -> tuple[float, float, int]:
        c, cost, _ = solve_strength(plan.cost, allowed, plan.c_max)
        return c, cost, materialized_sparse_macs(ctx.model, plan.select(c), ctx.example)

    best = (c, cost, materialized_sparse_macs(ctx.model, plan.select(c), ctx.example))
    lo, hi = target - fixed, plan.cost(plan.c_max)
    for _ in range(steps):
        if target - best[2] <= 0.001 * ctx.reference:  # within a tenth of a point
            break
        mid = (lo + hi) / 2
        trial = at(mid)
        if trial[2] <= target:
            lo, best = mid, max(best, trial, key=lambda t: t[2])
        else:
            hi = mid
    return best


def hnsi_round(ctx: RoundContext) -> RoundOutcome:
    o: HNSIOptions = ctx.options
    stage = 2 if o.single_stage or ctx.round > 1 else 1
    shape = tuple(ctx.example.shape[1:])
    layers = kernel_layers(ctx.model, ctx.example)
    if not layers:
        return RoundOutcome(0, "no conv has several kernels per filter: nothing for hnsi to prune", {"stage": stage})
    alive = {layer.name: alive_kernels(layer.conv) for layer in layers}
    saliency = {layer.name: kernel_saliency(layer.conv.weight, o.norm) for layer in layers}
    # Everything the stage does not touch (linear layers, depthwise and single-input convs).
    fixed = count_macs(ctx.model, shape, sparse=True) - sum(int(alive[x.name].sum()) * x.cost for x in layers)
    lo = 0 if o.at_least_one == "none" else 1
    low = low_layers(layers, o)
    # The convs that keep every input group (stage 2) and every filter (both stages).
    ruled = {"stage": frozenset(low), "none": frozenset(), "all": frozenset(x.name for x in layers)}[o.at_least_one]
    if stage == 1:
        plan = in_groups(layers, alive, saliency, lo, keep_filters=ruled)
    else:
        whole = frozenset(
            x.name for x in layers if x.name not in low and x.name not in ruled and o.high_level == "groups"
        )
        plan = in_layers(layers, alive, saliency, lo, ruled, whole, o.high_strength)
    target = ctx.reference * (1 - ctx.goal)
    c, cost, reached = solve_strength(plan.cost, target - fixed, plan.c_max)
    final = None
    if ctx.round == ctx.rounds and reached:
        c, cost, final = _through_materialisation(ctx, plan, fixed, target, c, cost)
    masks = plan.select(c)
    scored_at = time.perf_counter()
    held_masks(ctx.model).remove()
    apply_kernel_masks(ctx.model, {name: m for name, m in masks.items() if not m.all()})

    before, after = sum(int(a.sum()) for a in alive.values()), sum(int(m.sum()) for m in masks.values())
    details = {
        "stage": stage,
        "strength": c,
        "kernels_before": before,
        "kernels_after": after,
        "predicted_sparse_macs": fixed + cost,
        "sparse_macs": count_macs(ctx.model, shape, sparse=True),
        "materialized_sparse_macs": final,
        "empty_groups": {x.name: k for x in layers if (k := _empty_groups(x, masks[x.name]))},
        "empty_filters": {x.name: k for x in layers if (k := int((~masks[x.name].any(1)).sum()))},
    }
    if stage == 2:
        details["low_layers"] = low
    note = None
    if not reached:
        where = "input-channel group" if stage == 1 else "layer"
        note = (
            f"stage {stage} cannot reach {100 * ctx.goal:.1f}% kernel-sparse MACs reduction: with every {where} "
            f"at its fewest kernels it reaches {100 * (1 - (fixed + cost) / ctx.reference):.2f}%"
        )
    return RoundOutcome(before - after, note, details, scored_at=scored_at)


def hnsi_schedule(options: HNSIOptions, epochs: int, rounds: int | None) -> list[tuple[float, int]]:
    """(share of the target reached, fine-tuning epochs) per stage."""
    stages = 1 if options.single_stage else 2
    if rounds is not None and rounds != stages:
        raise ConfigError(
            f"hnsi runs {stages} stage(s) as rounds{' (single_stage)' if stages == 1 else ''}, "
            f"not rounds={rounds}: leave rounds unset (single_stage=true gives one stage)"
        )
    if stages == 1:
        return [(1.0, epochs)]
    first = epochs // 2 if options.stage1_epochs is None else options.stage1_epochs
    if first > epochs:
        raise ConfigError(
            f"hnsi stage1_epochs={first} is more than the {epochs} fine-tuning epochs in total (finetune_epochs)"
        )
    return [(options.stage1_share, first), (1.0, epochs - first)]


@register_method(
    "hnsi",
    "HNSI kernel pruning in two stages (groups, then layers), unread input channels "
    "removed at the end; the target is on kernel-sparse MACs (Zhu & Pei, Appl. Intell. 2022)",
    options=HNSIOptions,
    rounds=2,
    prune_round=hnsi_round,
    measures=(("sparse_macs", sparse_macs), ("kernels", lambda model, shape: kernels_per_layer(model))),
    target_on="sparse_macs",
    check_target=kernel_sparse_target,
    check_model=check_low_layers,
    off_target_note=materialisation_note,
    restore=restore_masks,
    finalize=materialize_record,
    schedule=hnsi_schedule,
)
def hnsi_scores(ctx: ScoreContext) -> LayerScores:
    """Filter view of the kernel saliencies (their sum per filter); the rounds use :func:`hnsi_round`."""
    o: HNSIOptions = ctx.options
    return {
        (name, "out"): kernel_saliency(conv.weight, o.norm).sum(1).float()
        for name, conv in ctx.model.named_modules()
        if multi_kernel(conv)
    }
