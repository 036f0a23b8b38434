"""Constructor arguments of parametrised layers, so a pruned model can be rebuilt.

Pruning narrows layers; the architecture's factory builds them wide. A checkpoint stores
each layer's constructor arguments (its layer type's ``LayerType.spec``, see
``secateurs.graph.layers``), and loading replaces every layer whose arguments differ with a
fresh one of the stored shape before the weights go in.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..errors import CheckpointError
from ..graph.layers import LAYER_TYPES, spec_classes


def layer_specs(model: nn.Module) -> dict[str, dict[str, Any]]:
    """``{module_name: {"type": ..., "args": {...}}}`` for every layer whose type has a spec."""
    out = {}
    for name, m in model.named_modules():
        # The first class in the MRO with a spec: a subclass that only changes forward (such
        # as the trainer's GlobalBatchNorm2d) is rebuilt as its base layer.
        cls = next((c for c in type(m).__mro__ if c in LAYER_TYPES and LAYER_TYPES[c].spec is not None), None)
        if cls is not None:
            out[name] = {"type": cls.__name__, "args": LAYER_TYPES[cls].spec(m)}
    return out


def apply_layer_specs(model: nn.Module, specs: dict[str, dict[str, Any]]) -> int:
    """Replace every layer whose stored arguments differ from the live one; returns how many."""
    live = layer_specs(model)
    known = spec_classes()
    replaced = 0
    for name, spec in specs.items():
        if live.get(name) == spec:
            continue
        if spec["type"] not in known:
            raise CheckpointError(
                f"layer {name!r} has type {spec['type']!r}, which this version cannot rebuild "
                f"(known: {sorted(known)}); register its layer type with a spec (secateurs.register_layer)"
            )
        try:
            model.get_submodule(name)
        except AttributeError as e:
            raise CheckpointError(
                f"the checkpoint has a layer {name!r} that the model does not have; pass the architecture the "
                "checkpoint was saved from (load(path, model=...))"
            ) from e
        args = dict(spec["args"])
        for key in ("kernel_size", "stride", "dilation", "normalized_shape"):
            if isinstance(args.get(key), list):
                args[key] = tuple(args[key])
        if isinstance(args.get("padding"), list):
            args["padding"] = tuple(args["padding"])
        try:
            layer = known[spec["type"]](**args)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"layer {name!r}: cannot rebuild {spec['type']} from {spec['args']}: {e}") from e
        model.set_submodule(name, layer)
        replaced += 1
    return replaced


def apply_tensor_shapes(model: nn.Module, tensors: dict[str, torch.Tensor]) -> int:
    """Give every loose parameter or buffer the checkpoint's shape; returns how many changed.

    The layers of the table are rebuilt by :func:`apply_layer_specs`; what pruning narrows
    outside them (a layer-scale vector, a user module's own ``nn.Parameter``) is held by no
    constructor, so it is replaced by an empty tensor of the stored shape, which
    ``load_state_dict`` then fills. Names the model lacks are left to its strict check.
    """
    changed = 0
    for name, value in tensors.items():
        owner_name, _, attr = name.rpartition(".")
        try:
            owner = model.get_submodule(owner_name)
        except AttributeError:
            continue
        for table in (owner._parameters, owner._buffers):
            live = table.get(attr)
            if live is None or live.shape == value.shape:
                continue
            fresh = torch.empty(value.shape, dtype=live.dtype, device=live.device)
            table[attr] = nn.Parameter(fresh, requires_grad=live.requires_grad) if table is owner._parameters else fresh
            changed += 1
    return changed
