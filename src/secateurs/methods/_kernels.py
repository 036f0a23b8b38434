"""Model-side helpers of kernel-level pruning: which convs have kernels to prune, what one
kernel costs, the masks a model holds, and the materialisation record."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from .._copy import copy_model
from ..graph import KernelMasks, MaterializeReport, apply_kernel_masks, materialize
from ..graph.layers.kinds import CONVS
from ..graph.masks import MASK
from ..measure._common import eval_mode
from ..measure.macs import nonzero_kernels


def multi_kernel(m: nn.Module) -> bool:
    """A conv whose filters have several kernels: what kernel pruning works on. Depthwise
    convs and convs with one input channel per group have one kernel per filter; removing it
    is filter pruning, left to the channel methods."""
    return isinstance(m, CONVS) and m.weight.shape[1] > 1


@dataclass
class KernelLayer:
    """A conv with more than one kernel per filter, as it ran in the forward."""

    name: str
    conv: nn.Module
    cost: int  # MACs of one kernel for one sample: output positions x kernel elements (all calls)


def kernel_layers(model: nn.Module, example: torch.Tensor) -> list[KernelLayer]:
    """The :func:`multi_kernel` convs, in the order of their first call. Convs the forward
    does not reach have no cost and are left alone."""
    positions: dict[str, int] = {}
    names = {m: n for n, m in model.named_modules() if multi_kernel(m)}

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        name = names[module]
        positions[name] = positions.get(name, 0) + output[0, 0].numel()

    handles = [m.register_forward_hook(hook) for m in names]
    try:
        with eval_mode(model), torch.inference_mode():
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
    modules = dict(model.named_modules())
    return [KernelLayer(n, modules[n], p * math.prod(modules[n].kernel_size)) for n, p in positions.items()]


def alive_kernels(conv: nn.Module) -> torch.Tensor:
    """The conv's kernels still in use: its ``kernel_mask`` if it holds one, else the non-zero ones."""
    mask = conv._buffers.get(MASK)
    if mask is not None:
        return mask.detach().cpu().clone()
    return nonzero_kernels(conv.weight).cpu()


def held_masks(model: nn.Module) -> KernelMasks:
    """The masks currently on ``model`` (to :meth:`~KernelMasks.remove` them)."""
    return KernelMasks({n: m for n, m in model.named_modules() if m._buffers.get(MASK) is not None})


def restore_masks(model: nn.Module) -> None:
    """Put the masks back on a model loaded from a checkpoint: masks are not saved, the zero
    kernels they left are. Every multi-kernel conv with an all-zero kernel is masked there,
    so that training keeps those kernels at zero (a kept kernel that is exactly zero, which
    trained weights never are, would be held too)."""
    masks = {}
    for name, m in model.named_modules():
        if multi_kernel(m) and m._buffers.get(MASK) is None:
            alive = nonzero_kernels(m.weight)
            if not alive.all():
                masks[name] = alive
    if masks:
        apply_kernel_masks(model, masks)


def materialized_sparse_macs(model: nn.Module, masks: dict[str, torch.Tensor], example: torch.Tensor) -> int:
    """The kernel-sparse MACs ``model`` would have with ``masks`` once materialised (on a copy):
    materialising also drops the kernels of filters nobody reads and of those reading constants."""
    twin = copy_model(model)
    held_masks(twin).remove()
    apply_kernel_masks(twin, {name: m for name, m in masks.items() if not m.all()})
    return materialize(twin, example).sparse_macs[1]


def materialize_record(model: nn.Module, example: torch.Tensor) -> dict[str, Any]:
    """:func:`~secateurs.graph.materialize` the masked ``model`` in place; what it did, JSON-able."""
    return report_dict(materialize(model, example))


def report_dict(r: MaterializeReport) -> dict[str, Any]:
    inputs = {n: c.inputs_removed for n, c in r.layers.items() if c.inputs_removed}
    kept: dict[str, int] = {}
    for k in r.kept:
        kept[k.role] = kept.get(k.role, 0) + 1
    return {
        "dense_macs": list(r.macs),
        "sparse_macs": list(r.sparse_macs),
        "params": list(r.params),
        "exact": r.exact,
        "approximate_at": list(r.fold.approximate_at) if r.fold is not None else [],
        "inputs_removed": inputs,
        "inputs_removed_total": sum(inputs.values()),
        "outputs_removed": {n: c.outputs_removed for n, c in r.layers.items() if c.outputs_removed},
        "units_removed": r.removed_units,
        "filters_folded": {n: len(rows) for n, rows in r.folded.items()},
        "filters_folded_total": sum(len(rows) for rows in r.folded.values()),
        "kept": kept,
        "kept_examples": [f"{k.module} {k.role} {k.index}: {k.reason}" for k in r.kept[:5]],
    }
