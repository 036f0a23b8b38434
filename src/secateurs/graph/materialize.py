"""``materialize``: turn kernel sparsity into physical shrinkage. Inputs no kernel reads are
removed with their producers ("adjustable input channels"), and filters with no kernel
left are folded forward as constants."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..errors import PruningError
from ..measure import count_macs, count_params
from .fold import FoldReport, fold_constant_channels
from .groups import ChannelGraph, Unit
from .layers import layer_type
from .masks import MASK, KernelMasks, _check, _take_off, _zero
from .surgery import removal_problems, remove_units
from .trace import trace


@dataclass(frozen=True)
class Kept:
    """A channel that no kernel needs any more but that stays, and why."""

    module: str
    role: str  # "input": a column no kernel reads; "filter": a row with no kernel left
    index: int  # in the layer's numbering before materialize
    reason: str


@dataclass
class LayerChange:
    inputs_removed: int = 0
    outputs_removed: int = 0  # filters of a conv, features of a linear, channels of a BN


@dataclass
class MaterializeReport:
    """What :func:`materialize` removed; ``(before, after)`` pairs for the measurements.

    ``sparse_macs`` counts kept kernels only; ``macs`` is dense, what a speed-up on
    ordinary hardware is measured on. ``exact`` is False when a folded constant is only
    exact away from the borders (a zero-padded k>1 consumer), see ``fold``.
    """

    layers: dict[str, LayerChange]
    kept: list[Kept]
    exact: bool
    macs: tuple[int, int]
    sparse_macs: tuple[int, int]
    params: tuple[int, int]
    fold: FoldReport | None = None  # where the constants of the folded filters went
    removed_units: int = 0
    folded: dict[str, dict[int, float]] = field(default_factory=dict)  # conv -> {filter (before): constant}


def _widths(model: nn.Module) -> dict[str, tuple[int, int]]:
    """(input, output) channels of every layer of known widths (convs, linears, BNs)."""
    out = {}
    for name, m in model.named_modules():
        layer = layer_type(m)
        if layer is not None and layer.widths is not None:
            out[name] = layer.widths(m)
    return out


def _reads(conv: nn.Module, mask: torch.Tensor, channel: int) -> bool:
    """Whether any kept kernel of ``conv`` reads its input ``channel`` (grouped convs too)."""
    per_in, per_out = mask.shape[1], mask.shape[0] // conv.groups
    group, col = divmod(channel, per_in)
    return bool(mask[group * per_out : (group + 1) * per_out, col].any())


def _still_read(unit: Unit, masks: dict[str, torch.Tensor], modules: dict[str, nn.Module]) -> str | None:
    if not unit.prunable:
        return f"not prunable: {unit.reason}"
    for m in unit.members:
        if m.kind in ("out", "bn"):
            continue
        if m.kind != "in" or m.module not in masks or _reads(modules[m.module], masks[m.module], m.index):
            return f"{m.module} still reads it (its {m.kind}put channel {m.index})"
    return None


def _unread_units(
    model: nn.Module, graph: ChannelGraph, masks: dict[str, torch.Tensor]
) -> tuple[list[Unit], list[Kept]]:
    """Units every reader dropped, and the dropped inputs that must stay."""
    modules = dict(model.named_modules())
    verdict: dict[int, str | None] = {}
    units: dict[int, Unit] = {}
    stays = []
    for name, mask in masks.items():
        for c in range(modules[name].in_channels):
            if _reads(modules[name], mask, c):
                continue
            hit = graph.locate(name, "in", c)
            if hit is None:
                stays.append(Kept(name, "input", c, "the conv did not run in the traced forward"))
                continue
            unit = hit[0].units[hit[1]]
            if id(unit) not in verdict:
                verdict[id(unit)] = _still_read(unit, masks, modules)
            if verdict[id(unit)] is None:
                units[id(unit)] = unit
            else:
                stays.append(Kept(name, "input", c, verdict[id(unit)]))
    return list(units.values()), stays


def _removable(model: nn.Module, graph: ChannelGraph, units: list[Unit]) -> tuple[list[Unit], dict[int, str]]:
    """Set aside units the engine would refuse as a set (emptying a layer, uneven grouped
    convs), so that one of them does not stop the rest."""
    rejected: dict[int, str] = {}
    while True:
        live = [u for u in units if id(u) not in rejected]
        bad = removal_problems(model, graph, live)
        if not bad:
            return live, rejected
        for u in live:
            hit = next((bad[m.module] for m in u.members if m.module in bad), None)
            if hit is not None:
                rejected[id(u)] = hit


def _measure(model: nn.Module, shape: tuple[int, ...]) -> tuple[int, int, int]:
    return count_macs(model, shape), count_macs(model, shape, sparse=True), count_params(model)


def materialize(
    model: nn.Module, example_inputs: Any, masks: KernelMasks | Mapping[str, torch.Tensor] | None = None
) -> MaterializeReport:
    """Turn kernel sparsity into physically smaller layers, in place, and drop the masks.

    1. An input channel that no kept kernel of any reader reads is removed with its whole
       unit (producer filter, BN, every reader's column): exact, the columns were zero.
    2. A filter with no kernel left outputs a constant (its bias, or 0): it is removed and
       the constant folded into the layers that read it (``fold_constant_channels``).
    3. Masks and hooks are taken off; the zeros in the kept layers remain.

    Channels that cannot go (not prunable, still read elsewhere) are listed in ``kept``.

    Args:
        model: the network, masked with :func:`apply_kernel_masks` or not.
        example_inputs: a batch the model accepts; its sample shape is used for MACs.
        masks: the masks; None reads the ``kernel_mask`` buffers on the model.
    """
    holder = masks if isinstance(masks, KernelMasks) else None
    if holder is not None:
        masks = holder.masks
    if masks is None:
        masks = {name: m._buffers[MASK] for name, m in model.named_modules() if m._buffers.get(MASK) is not None}
    checked = _check(model, masks, fresh=False)
    with torch.no_grad():  # outputs must be the masked model's, whatever the weights held
        for conv, mask in checked.values():
            _zero(conv.weight, mask)
    masks = {name: mask.cpu() for name, (_, mask) in checked.items()}
    first = example_inputs[0] if isinstance(example_inputs, (tuple, list)) else example_inputs
    shape = tuple(first.shape[1:])
    before, widths = _measure(model, shape), _widths(model)
    graph = trace(model, example_inputs)
    units, kept = _unread_units(model, graph, masks)
    units, rejected = _removable(model, graph, units)
    # Surgery narrows weights, not the buffers: no stale mask may survive it, nor any hook.
    for m in model.modules():
        _take_off(m)
    if holder is not None:
        holder.remove()
    removed_out: dict[str, set[int]] = defaultdict(set)
    if units:
        try:
            remove_units(model, graph, units, example_inputs)
            for u in units:
                for m in u.members:
                    if m.kind == "out":
                        removed_out[m.module].add(m.index)
        except PruningError as e:
            rejected.update({id(u): str(e) for u in units})
            units = []
    kept += [
        Kept(m.module, "input", m.index, rejected[id(u)])
        for g in graph.groups
        for u in g.units
        if id(u) in rejected
        for m in u.members
        if m.kind == "in" and m.module in masks
    ]

    folded, fold_report = _fold_constant_filters(
        model, example_inputs, masks, removed_out, None if units else graph, kept
    )
    after = _measure(model, shape)
    widths_after = _widths(model)
    layers = {}
    for name, (cin, cout) in widths.items():
        nin, nout = widths_after[name]
        if (nin, nout) != (cin, cout):
            layers[name] = LayerChange(cin - nin, cout - nout)
    exact = fold_report is None or fold_report.exact
    return MaterializeReport(
        layers,
        kept,
        exact,
        (before[0], after[0]),
        (before[1], after[1]),
        (before[2], after[2]),
        fold_report,
        len(units),
        folded,
    )


def _fold_constant_filters(
    model: nn.Module,
    example_inputs: Any,
    masks: dict[str, torch.Tensor],
    removed_out: dict[str, set[int]],
    graph: ChannelGraph | None,
    kept: list[Kept],
) -> tuple[dict[str, dict[int, float]], FoldReport | None]:
    """Fold every filter with no kernel left; those the fold refuses are added to ``kept``."""
    modules = dict(model.named_modules())
    requests = []  # (conv, index before materialize, index now, constant)
    for name, mask in masks.items():
        conv, gone = modules[name], removed_out.get(name, set())
        for o in (~mask.any(1)).nonzero().flatten().tolist():
            if o not in gone:  # else nobody read it and step 1 removed it already
                now = o - sum(1 for g in gone if g < o)
                requests.append((name, o, now, float(conv.bias[now].detach()) if conv.bias is not None else 0.0))
    if not requests:
        return {}, None
    # Highest index first within a conv, so that folding a batch never shifts a filter of a
    # later batch (folding removes one unit per filter, never another conv's filters).
    requests.sort(key=lambda r: (r[0], -r[2]))
    report, done = FoldReport(), []

    def fold(batch: list, graph: ChannelGraph | None) -> ChannelGraph | None:
        """The fold is all or nothing, so a refused filter (tied by a residual add, read by
        the network output) must not hold back the rest: halve the batch until it passes.
        A refusal leaves the model untouched, so the graph stays valid until a fold succeeds."""
        graph = graph or trace(model, example_inputs)
        try:
            one = fold_constant_channels(model, example_inputs, _constants(batch), graph)
        except PruningError as e:
            if len(batch) == 1:
                kept.append(Kept(batch[0][0], "filter", batch[0][1], str(e)))
                return graph
            return fold(batch[len(batch) // 2 :], fold(batch[: len(batch) // 2], graph))
        report.channels += one.channels
        report.new_biases += one.new_biases
        done.extend(batch)
        return None

    fold(requests, graph)
    folded: dict[str, dict[int, float]] = defaultdict(dict)
    for name, o, _, value in sorted(done):
        folded[name][o] = value
    return dict(folded), report


def _constants(requests: list[tuple[str, int, int, float]]) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for name, _, now, value in requests:
        out[name][now] = value
    return dict(out)
