"""Torch-Pruning, our peer, as the benchmarks run it (a benchmark dependency, never a runtime
one): its magnitude pruner bisected to a MACs target, shared by prune_filters.py and the
matrix (_matrix_run.py)."""

from __future__ import annotations

import torch

from secateurs import count_macs
from secateurs._copy import copy_model


def tp_magnitude_prune(model: torch.nn.Module, shape: tuple[int, ...], target: float) -> torch.nn.Module:
    """Torch-Pruning's MagnitudePruner (L1, global ranking, its default normalisation), with the
    channel ratio bisected until the MACs reduction reaches ``target``."""
    import torch_pruning as tp

    base = count_macs(model, shape)
    x = torch.zeros(1, *shape)

    def cut(ratio: float) -> torch.nn.Module:
        m = copy_model(model)
        head = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)][-1:]
        pruner = tp.pruner.MagnitudePruner(
            m,
            x,
            importance=tp.importance.MagnitudeImportance(p=1),
            global_pruning=True,
            pruning_ratio=ratio,
            ignored_layers=head,
        )
        pruner.step()
        return m

    lo, hi, best = 0.0, 0.95, None
    for _ in range(12):
        mid = (lo + hi) / 2
        m = cut(mid)
        if 1 - count_macs(m, shape) / base >= target:
            hi, best = mid, m
        else:
            lo = mid
        if best is not None and abs(1 - count_macs(best, shape) / base - target) < 0.005:
            break
    return best if best is not None else cut(hi)
