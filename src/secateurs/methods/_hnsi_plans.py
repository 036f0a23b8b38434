"""The selection plans of HNSI's two stages (:mod:`.hnsi`): for a strength ``c``, what the
kept kernels cost and which they are. Kept apart from the round so each plan can be tested
against ``count_macs`` on its own (tests/test_hnsi.py).

Kernels of a conv are viewed by input channel (:func:`by_input`): row ``i`` holds every
kernel that reads input channel ``i`` -- the "group" of that channel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ._hnsi import effective_count, keep_counts, top_k_mask
from ._kernels import KernelLayer


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


def keep_every_filter(mask: torch.Tensor, alive: torch.Tensor, saliency: torch.Tensor) -> torch.Tensor:
    """``mask`` ``[out, in/groups]`` with every filter that lost its last live kernel given its
    strongest back. A filter with no kernel is a constant that materialisation folds forward,
    so the next conv would stop reading that channel: the low-level convs keep their filters
    so that the low-level convs after them keep every input channel."""
    empty = alive.any(1) & ~mask.any(1)
    if not empty.any():
        return mask
    best = saliency.masked_fill(~alive, -math.inf).argmax(1)
    mask = mask.clone()
    mask[empty, best[empty]] = True
    return mask


@dataclass
class _InputGroups:
    """A conv in stage 1: its kernels by input-channel group, each group's live count and
    effective count (what ``keep`` reads)."""

    layer: KernelLayer
    alive: torch.Tensor  # [in, out/groups] (by_input): row i, the live kernels reading input i
    saliency: torch.Tensor  # the same layout, dead kernels 0
    n: torch.Tensor  # live kernels per group
    effective: torch.Tensor

    @classmethod
    def of(cls, layer: KernelLayer, alive: torch.Tensor, saliency: torch.Tensor) -> _InputGroups:
        g = layer.conv.groups
        a = by_input(alive, g)
        s = by_input(saliency, g) * a
        n = a.sum(1)
        return cls(layer, a, s, n, effective_count(s.sum(1), s.square().sum(1), n))


@dataclass
class _KernelRow:
    """A conv in stage 2 pruned kernel by kernel: every live kernel's rank in the layer."""

    layer: KernelLayer
    alive: torch.Tensor
    rank: torch.Tensor  # 0 = the most salient live kernel; dead kernels rank last
    rank_in: torch.Tensor  # ``rank`` by input group, dead kernels at numel
    live: torch.Tensor  # input groups with a live kernel
    n: torch.Tensor
    effective: torch.Tensor

    @classmethod
    def of(cls, layer: KernelLayer, alive: torch.Tensor, saliency: torch.Tensor) -> _KernelRow:
        a, s = alive, saliency * alive
        ranked = s.flatten().masked_fill(~a.flatten(), -math.inf)
        rank = torch.empty(a.numel(), dtype=torch.int64)
        rank[torch.sort(ranked, descending=True, stable=True).indices] = torch.arange(a.numel())
        rank = rank.view(a.shape)
        g = layer.conv.groups
        rank_in = by_input(rank, g).masked_fill(~by_input(a, g), a.numel())
        n = a.sum()
        return cls(layer, a, rank, rank_in, by_input(a, g).any(1), n, effective_count(s.sum(), s.square().sum(), n))

    def mask(self, k: int, restore: bool) -> torch.Tensor:
        """The ``k`` most salient live kernels; with ``restore`` every emptied group, then every
        emptied filter, gets its strongest back."""
        mask = (self.rank < k) & self.alive
        if restore:
            g = self.layer.conv.groups
            m_in = by_input(mask, g)
            empty = self.live & ~m_in.any(1)
            m_in[empty, self.rank_in[empty].argmin(1)] = True
            mask = keep_every_filter(from_input(m_in, g), self.alive, -self.rank.double())
        return mask


def in_groups(
    layers: list[KernelLayer],
    alive: dict[str, torch.Tensor],
    saliency: dict[str, torch.Tensor],
    lo: int = 1,
    keep_filters: frozenset[str] = frozenset(),
) -> StagePlan:
    """Stage 1: ``keep`` per input-channel group of every conv; the ``keep_filters`` convs give
    an emptied filter its strongest kernel back (:func:`keep_every_filter`), and pay for it."""
    sets = [_InputGroups.of(layer, alive[layer.name], saliency[layer.name]) for layer in layers]
    e = torch.cat([x.effective for x in sets])
    n = torch.cat([x.n for x in sets])
    w = torch.cat([torch.full_like(x.n, x.layer.cost) for x in sets])

    def layer_mask(c: float, x: _InputGroups) -> torch.Tensor:
        mask = from_input(top_k_mask(x.saliency, x.alive, keep_counts(x.effective, x.n, c, lo)), x.layer.conv.groups)
        if x.layer.name in keep_filters:
            mask = keep_every_filter(mask, alive[x.layer.name], saliency[x.layer.name])
        return mask

    def given_back(c: float) -> int:
        """Kernels the kept filters cost above the groups' ``keep`` (each in an emptied filter)."""
        total = 0
        for x in sets:
            if x.layer.name in keep_filters:
                total += (int(layer_mask(c, x).sum()) - int(keep_counts(x.effective, x.n, c, lo).sum())) * x.layer.cost
        return total

    def cost(c: float) -> float:
        return float((keep_counts(e, n, c, lo) * w).sum()) + given_back(c)

    def select(c: float) -> dict[str, torch.Tensor]:
        return {x.layer.name: layer_mask(c, x) for x in sets}

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
    def of(cls, layer: KernelLayer, alive: torch.Tensor, saliency: torch.Tensor) -> GroupRow:
        g = layer.conv.groups
        a = by_input(alive, g)
        norms = (by_input(saliency, g) * a).sum(1)  # a group's norm: the saliencies of its live kernels
        live = a.any(1)
        order = torch.sort(norms.masked_fill(~live, -math.inf), descending=True, stable=True).indices[: int(live.sum())]
        kernels = torch.cat([torch.zeros(1, dtype=torch.int64), a.sum(1)[order].cumsum(0)])
        n = live.sum()
        return cls(layer, alive, order, kernels, n, effective_count(norms[order].sum(), norms[order].square().sum(), n))

    def mask(self, k: int) -> torch.Tensor:
        g = self.layer.conv.groups
        keep = torch.zeros(self.alive.shape[1] * g, dtype=torch.bool)
        keep[self.order[:k]] = True
        return from_input(by_input(self.alive, g) & keep.unsqueeze(1), g)


def in_layers(
    layers: list[KernelLayer],
    alive: dict[str, torch.Tensor],
    saliency: dict[str, torch.Tensor],
    lo: int = 1,
    restore: frozenset[str] = frozenset(),
    whole_groups: frozenset[str] = frozenset(),
    group_strength: float = 1.0,
) -> StagePlan:
    """Stage 2: ``keep`` over all remaining kernels of every conv; in the ``restore`` convs a
    group left empty gets its strongest kernel back. The ``whole_groups`` convs (high-level
    ones, by default) instead keep ``keep(norms; group_strength * c)`` of their input-channel
    groups, ranked by the groups' norms, each kept group whole: the layer stops reading the others."""
    groups = [GroupRow.of(x, alive[x.name], saliency[x.name]) for x in layers if x.name in whole_groups]
    kernel_plan = _kernels_in_layers([x for x in layers if x.name not in whole_groups], alive, saliency, lo, restore)
    if not groups:
        return kernel_plan
    e = torch.stack([r.effective for r in groups])
    n = torch.stack([r.n for r in groups])

    def cost(c: float) -> float:
        ks = keep_counts(e, n, c * group_strength, lo).tolist()
        return kernel_plan.cost(c) + float(sum(int(r.kernels[k]) * r.layer.cost for k, r in zip(ks, groups)))

    def select(c: float) -> dict[str, torch.Tensor]:
        ks = keep_counts(e, n, c * group_strength, lo).tolist()
        return {**kernel_plan.select(c), **{r.layer.name: r.mask(k) for k, r in zip(ks, groups)}}

    return StagePlan(cost, select, max(kernel_plan.c_max, _c_max(e, n) / group_strength))


def _kernels_in_layers(
    layers: list[KernelLayer],
    alive: dict[str, torch.Tensor],
    saliency: dict[str, torch.Tensor],
    lo: int,
    restore: frozenset[str],
) -> StagePlan:
    """``keep`` over all remaining kernels of every conv; the ``restore`` ones give an emptied
    group, then an emptied filter, its strongest kernel back (and the cost counts them)."""
    rows = [_KernelRow.of(layer, alive[layer.name], saliency[layer.name]) for layer in layers]
    if not rows:
        return StagePlan(lambda c: 0.0, lambda c: {}, 0.0)
    e = torch.stack([r.effective for r in rows])
    n = torch.stack([r.n for r in rows])

    def cost(c: float) -> float:
        ks = keep_counts(e, n, c, lo).tolist()
        return float(
            sum((int(r.mask(k, True).sum()) if r.layer.name in restore else k) * r.layer.cost for k, r in zip(ks, rows))
        )

    def select(c: float) -> dict[str, torch.Tensor]:
        ks = keep_counts(e, n, c, lo).tolist()
        return {r.layer.name: r.mask(k, r.layer.name in restore) for k, r in zip(ks, rows)}

    return StagePlan(cost, select, _c_max(e, n))
