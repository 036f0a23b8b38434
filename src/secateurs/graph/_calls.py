"""The counted layers' calls seen by a meta run of a traced graph, so that MACs and the
budget's cost model come from shapes the trace already computed instead of a real forward.

A real forward with hooks (``measure.count_macs``) sees every layer the model calls; the
traced graph sees the layers called as graph nodes. The two agree unless a counted layer
is called inside a module the trace keeps whole (a leaf without a handler): then the
record says it is incomplete and callers fall back to the forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..errors import SecateursError
from .layers import LayerCost, layer_type


def _counted(module: nn.Module) -> bool:
    layer = layer_type(module)
    return layer is not None and (layer.macs is not None or layer.cost is not None)


@dataclass
class LayerCalls:
    """Each call of a layer with a MACs count or a cost (``LayerType.macs``/``.cost``): its
    module name, its inputs and its output, as meta tensors, in call order."""

    calls: list[tuple[str, tuple, Any]] = field(default_factory=list)
    batch: int | None = None  # the first input's batch size (figures are of one sample)
    complete: bool = True  # False: a counted layer ran where the graph could not see it

    def record(self, name: str, module: nn.Module, args: tuple, out: Any) -> None:
        """Note one ``call_module`` node's run: counted layers are kept; a module kept whole
        that holds counted layers makes the record incomplete."""
        if self.batch is None:
            self.batch = next((int(a.shape[0]) for a in args if isinstance(a, torch.Tensor) and a.dim()), None)
        if _counted(module):
            self.add(name, args, out)
        elif module._modules and any(_counted(m) for m in module.modules()):
            self.complete = False

    def add(self, name: str, args: tuple, out: Any) -> None:
        """Keep one counted layer's call; real tensors are kept as their meta twins (shapes
        only, so a hooked forward does not hold on to every activation)."""
        self.calls.append((name, _meta(args), _meta(out)))

    def opaque(self, module: nn.Module) -> None:
        """A module run on real zeros (no handler): its layers, if counted, are not recorded."""
        if any(_counted(m) for m in module.modules()):
            self.complete = False

    @property
    def usable(self) -> bool:
        """Complete and of one sample: what ``count_macs`` and the cost model measure."""
        return self.complete and self.batch == 1

    def figures(self, model: nn.Module, sparse: bool = False) -> tuple[dict[str, LayerCost], dict[str, int]]:
        """Each layer's cost and MACs by module name, as a hooked forward of one sample in
        eval mode records them (``measure.macs.layer_figures``): a layer called twice sums
        its MACs and keeps its last cost. ``model`` is the one run (its weights count for
        ``sparse``)."""
        modules = dict(model.named_modules())
        costs: dict[str, LayerCost] = {}
        macs: dict[str, int] = {}
        for name, args, out in self.calls:
            module = modules[name]
            layer = layer_type(module)
            if layer.cost is not None:
                cost = layer.cost(module, out)
                if cost is not None:
                    costs[name] = cost
            if layer.macs is not None:
                try:
                    n = layer.macs(module, args, out, sparse)
                except SecateursError as e:
                    raise type(e)(f"layer {name!r} ({type(module).__name__}): {e}") from e
                macs[name] = macs.get(name, 0) + n
        return costs, macs

    def macs(self, model: nn.Module, sparse: bool = False) -> int:
        return sum(self.figures(model, sparse)[1].values())


def _meta_tensor(t: torch.Tensor) -> torch.Tensor:
    return t if t.is_meta else t.to("meta")


def _meta(value: Any) -> Any:
    # A tensor, or a tuple of them, is nearly every call: handled without the pytree walk,
    # which was half of the post-surgery shape check's time (resnet56).
    if isinstance(value, torch.Tensor):
        return _meta_tensor(value)
    if type(value) is tuple and all(isinstance(v, torch.Tensor) for v in value):
        return tuple(map(_meta_tensor, value))
    return torch.utils._pytree.tree_map_only(torch.Tensor, _meta_tensor, value)
