"""HNSI two-stage progressive kernel pruning with adjustable input channels (paper 1;
METHODS.md, method 1). Kernels ``W[j, i]`` are masked, not channels removed, until the end.

* Stage 1 (round 1), in groups: every input channel's kernels ``{W[j, i]: all j}`` keep
  ``keep(v; c)`` of themselves (:mod:`._hnsi`), the strongest by saliency ``||W[j, i]||_p``,
  so every input channel is still read. Fine-tuning follows with the masks held.
* Stage 2 (round 2), in layers: every conv keeps ``keep(v; c)`` of all its remaining kernels.
  In low-level layers (the first ``low_fraction`` of the convs in forward order, or
  ``low_layers``) a group left empty gets its strongest kernel back; in high-level layers
  it stays empty, and the layer stops reading that input channel. Fine-tuning again.
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
from typing import Callable

import torch

from .._types import check_field_types
from ..errors import ConfigError
from ..graph import apply_kernel_masks
from ..measure import count_macs
from ._hnsi import effective_count, keep_counts, solve_strength, top_k_mask
from ._kernels import (KernelLayer, alive_kernels, held_masks, kernel_layers, materialize_record,
                       materialized_sparse_macs, multi_kernel, restore_masks)
from ._registry import LayerScores, RoundContext, RoundOutcome, ScoreContext, register_method

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
    #: group a kernel whenever c > 0, so "none" acts on stage 2's low-level layers.
    at_least_one: str = "stage"
    #: How stage 2 prunes the high-level convs: "groups" keeps ``keep`` of their input-channel
    #: groups (ranked by the groups' norms) and drops the rest whole, so the layer stops reading
    #: those channels and they can be removed; "kernels" selects kernels layer-wide as in the
    #: low-level convs, minus the rule (the reading of the first version, which almost never
    #: emptied a group: 0-3 input channels removed on resnet56 and vgg16 at 50-75%).
    high_level: str = "groups"

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
        if not 0.0 <= self.low_fraction <= 1.0:
            raise ValueError(f"low_fraction must be in [0, 1], got {self.low_fraction!r}")
        if not 0.0 < self.stage1_share < 1.0:
            raise ValueError(f"stage1_share must be strictly between 0 and 1, got {self.stage1_share!r}")
        if self.stage1_epochs is not None and (self.stage1_epochs < 0 or self.single_stage):
            raise ValueError(f"stage1_epochs must be a non-negative integer of a two-stage run, got "
                             f"{self.stage1_epochs!r}" + (" with single_stage" if self.single_stage else ""))


def kernel_saliency(weight: torch.Tensor, norm: str = "l1") -> torch.Tensor:
    """``||W[j, i]||_p`` per kernel, shape ``weight.shape[:2]``."""
    w = weight.detach().flatten(2).double().cpu()
    return w.abs().sum(-1) if norm == "l1" else w.square().sum(-1).sqrt()


def by_input(t: torch.Tensor, groups: int) -> torch.Tensor:
    """``[out, in/groups]`` -> ``[in, out/groups]``: row ``i`` holds the kernels that read input channel ``i``."""
    o, i = t.shape
    return t.reshape(groups, o // groups, i).transpose(1, 2).reshape(groups * i, o // groups)


def from_input(t: torch.Tensor, groups: int) -> torch.Tensor:
    """The inverse of :func:`by_input`."""
    ins, per_out = t.shape
    return t.reshape(groups, ins // groups, per_out).transpose(1, 2).reshape(groups * per_out, ins // groups)


@dataclass
class StagePlan:
    """A stage at strength ``c``: the kernel-sparse MACs of the pruned convs, and the masks."""

    cost: Callable[[float], float]
    select: Callable[[float], dict[str, torch.Tensor]]
    c_max: float  # keeps every kernel


def _c_max(effective: torch.Tensor, n: torch.Tensor) -> float:
    live = effective > 0
    return float((n[live] / effective[live]).max()) * (1 + 1e-9) if live.any() else 1.0


def in_groups(layers: list[KernelLayer], alive: dict[str, torch.Tensor], saliency: dict[str, torch.Tensor],
              lo: int = 1) -> StagePlan:
    """Stage 1: ``keep`` per input-channel group of every conv."""
    sets = []
    for layer in layers:
        g = layer.conv.groups
        a = by_input(alive[layer.name], g)
        s = by_input(saliency[layer.name], g) * a
        n = a.sum(1)
        sets.append((layer, a, s, n, effective_count(s.sum(1), s.square().sum(1), n)))
    e = torch.cat([x[4] for x in sets])
    n = torch.cat([x[3] for x in sets])
    w = torch.cat([torch.full_like(x[3], x[0].cost) for x in sets])

    def cost(c: float) -> float:
        return float((keep_counts(e, n, c, lo) * w).sum())

    def select(c: float) -> dict[str, torch.Tensor]:
        return {layer.name: from_input(top_k_mask(s, a, keep_counts(ef, k, c, lo)), layer.conv.groups)
                for layer, a, s, k, ef in sets}

    return StagePlan(cost, select, _c_max(e, n))


@dataclass
class GroupRow:
    """A conv of stage 2 that keeps whole input-channel groups: ``keep`` over the groups' norms."""

    layer: KernelLayer
    alive: torch.Tensor  # [out, in/groups]
    order: torch.Tensor  # live groups (input channels), strongest first
    kernels: torch.Tensor  # cumulative kernels of the first k groups of ``order``, k = 0..n
    n: torch.Tensor
    effective: torch.Tensor

    @classmethod
    def of(cls, layer: KernelLayer, alive: torch.Tensor, saliency: torch.Tensor) -> "GroupRow":
        g = layer.conv.groups
        a = by_input(alive, g)
        norms = (by_input(saliency, g) * a).sum(1)  # a group's norm: the saliencies of its live kernels
        live = a.any(1)
        order = torch.sort(norms.masked_fill(~live, -math.inf), descending=True, stable=True).indices[:int(live.sum())]
        kernels = torch.cat([torch.zeros(1, dtype=torch.int64), a.sum(1)[order].cumsum(0)])
        n = live.sum()
        return cls(layer, alive, order, kernels, n, effective_count(norms[order].sum(), norms[order].square().sum(), n))

    def mask(self, k: int) -> torch.Tensor:
        g = self.layer.conv.groups
        keep = torch.zeros(self.alive.shape[1] * g, dtype=torch.bool)
        keep[self.order[:k]] = True
        return from_input(by_input(self.alive, g) & keep.unsqueeze(1), g)


def in_layers(layers: list[KernelLayer], alive: dict[str, torch.Tensor], saliency: dict[str, torch.Tensor],
              lo: int = 1, restore: frozenset[str] = frozenset(), whole_groups: frozenset[str] = frozenset()) -> StagePlan:
    """Stage 2: ``keep`` over all remaining kernels of every conv; in the ``restore`` convs a
    group left empty gets its strongest kernel back. The ``whole_groups`` convs (high-level
    ones, by default) instead keep ``keep`` of their input-channel groups, ranked by the
    groups' norms, each kept group whole: the layer stops reading the others."""
    groups = [GroupRow.of(x, alive[x.name], saliency[x.name]) for x in layers if x.name in whole_groups]
    kernel_plan = _kernels_in_layers([x for x in layers if x.name not in whole_groups], alive, saliency, lo, restore)
    if not groups:
        return kernel_plan
    e = torch.stack([r.effective for r in groups])
    n = torch.stack([r.n for r in groups])

    def cost(c: float) -> float:
        ks = keep_counts(e, n, c, lo).tolist()
        return kernel_plan.cost(c) + float(sum(int(r.kernels[k]) * r.layer.cost for k, r in zip(ks, groups)))

    def select(c: float) -> dict[str, torch.Tensor]:
        ks = keep_counts(e, n, c, lo).tolist()
        return {**kernel_plan.select(c), **{r.layer.name: r.mask(k) for k, r in zip(ks, groups)}}

    return StagePlan(cost, select, max(kernel_plan.c_max, _c_max(e, n)))


def _kernels_in_layers(layers: list[KernelLayer], alive: dict[str, torch.Tensor], saliency: dict[str, torch.Tensor],
                       lo: int, restore: frozenset[str]) -> StagePlan:
    """``keep`` over all remaining kernels of every conv (the ``restore`` ones give an emptied group its strongest back)."""
    rows = []
    for layer in layers:
        a, s = alive[layer.name], saliency[layer.name] * alive[layer.name]
        ranked = s.flatten().masked_fill(~a.flatten(), -math.inf)
        rank = torch.empty(a.numel(), dtype=torch.int64)
        rank[torch.sort(ranked, descending=True, stable=True).indices] = torch.arange(a.numel())
        rank = rank.view(a.shape)
        g = layer.conv.groups
        rank_in = by_input(rank, g).masked_fill(~by_input(a, g), a.numel())
        best = rank_in.min(1).values  # the rank of each group's strongest kernel
        live = by_input(a, g).any(1)
        firsts = torch.sort(best[live]).values if layer.name in restore else torch.empty(0, dtype=torch.int64)
        n = a.sum()
        rows.append((layer, a, rank, rank_in, live, firsts, n, effective_count(s.sum(), s.square().sum(), n)))
    if not rows:
        return StagePlan(lambda c: 0.0, lambda c: {}, 0.0)
    e = torch.stack([r[7] for r in rows])
    n = torch.stack([r[6] for r in rows])

    def kept(c: float) -> list[tuple[int, int]]:
        """(kernels by rank, groups given back) per conv."""
        ks = keep_counts(e, n, c, lo).tolist()
        return [(k, len(r[5]) - int(torch.searchsorted(r[5], k))) for k, r in zip(ks, rows)]

    def cost(c: float) -> float:
        return float(sum((k + back) * r[0].cost for (k, back), r in zip(kept(c), rows)))

    def select(c: float) -> dict[str, torch.Tensor]:
        out = {}
        for (k, _), (layer, a, rank, rank_in, live, firsts, _, _) in zip(kept(c), rows):
            mask = (rank < k) & a
            if len(firsts):
                g = layer.conv.groups
                m_in = by_input(mask, g)
                empty = live & ~m_in.any(1)
                m_in[empty, rank_in[empty].argmin(1)] = True
                mask = from_input(m_in, g)
            out[layer.name] = mask
        return out

    return StagePlan(cost, select, _c_max(e, n))


def low_layers(layers: list[KernelLayer], options: HNSIOptions) -> list[str]:
    names = [layer.name for layer in layers]
    if options.low_layers is None:
        return names[:math.floor(options.low_fraction * len(names) + 0.5)]
    for name in options.low_layers:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ConfigError(f"hnsi low_layers: {name!r} is not a conv with several kernels per filter.{hint} "
                              f"Those of this model are: {', '.join(names)}")
    return list(options.low_layers)


def _empty_groups(layer: KernelLayer, mask: torch.Tensor) -> int:
    return int((~by_input(mask, layer.conv.groups).any(1)).sum())


def _through_materialisation(ctx: RoundContext, plan: StagePlan, fixed: int, target: float, c: float, cost: float,
                             steps: int = 10) -> tuple[float, float, int]:
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
    if stage == 1:
        plan = in_groups(layers, alive, saliency, lo)
    else:
        restore = {"stage": frozenset(low), "none": frozenset(), "all": frozenset(x.name for x in layers)}
        whole = frozenset(x.name for x in layers if x.name not in low and x.name not in restore[o.at_least_one]
                          and o.high_level == "groups")
        plan = in_layers(layers, alive, saliency, lo, restore[o.at_least_one], whole)
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
    details = {"stage": stage, "strength": c, "kernels_before": before, "kernels_after": after,
               "predicted_sparse_macs": fixed + cost, "sparse_macs": count_macs(ctx.model, shape, sparse=True),
               "materialized_sparse_macs": final,
               "empty_groups": {x.name: k for x in layers if (k := _empty_groups(x, masks[x.name]))},
               "empty_filters": {x.name: k for x in layers if (k := int((~masks[x.name].any(1)).sum()))}}
    if stage == 2:
        details["low_layers"] = low
    note = None
    if not reached:
        where = "input-channel group" if stage == 1 else "layer"
        note = (f"stage {stage} cannot reach {100 * ctx.goal:.1f}% kernel-sparse MACs reduction: with every {where} "
                f"at its fewest kernels it reaches {100 * (1 - (fixed + cost) / ctx.reference):.2f}%")
    return RoundOutcome(before - after, note, details, scored_at=scored_at)


def hnsi_schedule(options: HNSIOptions, epochs: int, rounds: int | None) -> list[tuple[float, int]]:
    """(share of the target reached, fine-tuning epochs) per stage."""
    stages = 1 if options.single_stage else 2
    if rounds is not None and rounds != stages:
        raise ConfigError(f"hnsi runs {stages} stage(s) as rounds{' (single_stage)' if stages == 1 else ''}, "
                          f"not rounds={rounds}: leave rounds unset (single_stage=true gives one stage)")
    if stages == 1:
        return [(1.0, epochs)]
    first = epochs // 2 if options.stage1_epochs is None else options.stage1_epochs
    if first > epochs:
        raise ConfigError(f"hnsi stage1_epochs={first} is more than the {epochs} fine-tuning epochs in total "
                          "(finetune_epochs)")
    return [(options.stage1_share, first), (1.0, epochs - first)]


@register_method("hnsi", "HNSI kernel pruning in two stages (groups, then layers), unread input channels "
                 "removed at the end; the target is on kernel-sparse MACs (paper 1)",
                 options=HNSIOptions, rounds=2, prune_round=hnsi_round, kernel_level=True, restore=restore_masks,
                 finalize=materialize_record, schedule=hnsi_schedule)
def hnsi_scores(ctx: ScoreContext) -> LayerScores:
    """Filter view of the kernel saliencies (their sum per filter); the rounds use :func:`hnsi_round`."""
    o: HNSIOptions = ctx.options
    return {(name, "out"): kernel_saliency(conv.weight, o.norm).sum(1).float()
            for name, conv in ctx.model.named_modules()
            if multi_kernel(conv)}
