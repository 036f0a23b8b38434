"""Constructor arguments of parametrised layers, so a pruned model can be rebuilt.

Pruning narrows layers; the architecture's factory builds them wide. A checkpoint stores
each layer's constructor arguments, and loading replaces every layer whose arguments
differ with a fresh one of the stored shape before the weights go in. One entry per layer
type: adding a type touches only the table below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ..errors import CheckpointError


@dataclass(frozen=True)
class LayerSpec:
    cls: type[nn.Module]
    to_args: Callable[[nn.Module], dict[str, Any]]


def _conv_args(m: nn.Module) -> dict[str, Any]:
    return {
        "in_channels": m.in_channels,
        "out_channels": m.out_channels,
        "kernel_size": list(m.kernel_size),
        "stride": list(m.stride),
        "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
        "dilation": list(m.dilation),
        "groups": m.groups,
        "bias": m.bias is not None,
        "padding_mode": m.padding_mode,
    }


def _bn_args(m: nn.Module) -> dict[str, Any]:
    return {
        "num_features": m.num_features,
        "eps": m.eps,
        "momentum": m.momentum,
        "affine": m.affine,
        "track_running_stats": m.track_running_stats,
    }


def _linear_args(m: nn.Module) -> dict[str, Any]:
    return {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None}


def _groupnorm_args(m: nn.Module) -> dict[str, Any]:
    return {"num_groups": m.num_groups, "num_channels": m.num_channels, "eps": m.eps, "affine": m.affine}


def _layernorm_args(m: nn.Module) -> dict[str, Any]:
    return {
        "normalized_shape": list(m.normalized_shape),
        "eps": m.eps,
        "elementwise_affine": m.elementwise_affine,
        "bias": getattr(m, "bias", None) is not None,
    }


LAYER_SPECS: dict[str, LayerSpec] = {
    cls.__name__: LayerSpec(cls, fn)
    for cls, fn in [
        (nn.Conv1d, _conv_args),
        (nn.Conv2d, _conv_args),
        (nn.Conv3d, _conv_args),
        (nn.BatchNorm1d, _bn_args),
        (nn.BatchNorm2d, _bn_args),
        (nn.BatchNorm3d, _bn_args),
        (nn.Linear, _linear_args),
        (nn.GroupNorm, _groupnorm_args),
        (nn.LayerNorm, _layernorm_args),
    ]
}


def layer_specs(model: nn.Module) -> dict[str, dict[str, Any]]:
    """``{module_name: {"type": ..., "args": {...}}}`` for every layer type in the table."""
    out = {}
    for name, m in model.named_modules():
        # The first known class in the MRO: a subclass that only changes forward (such as
        # the trainer's GlobalBatchNorm2d) is rebuilt as its base layer.
        spec = next(
            (
                LAYER_SPECS[c.__name__]
                for c in type(m).__mro__
                if c.__name__ in LAYER_SPECS and LAYER_SPECS[c.__name__].cls is c
            ),
            None,
        )
        if spec is not None:
            out[name] = {"type": spec.cls.__name__, "args": spec.to_args(m)}
    return out


def apply_layer_specs(model: nn.Module, specs: dict[str, dict[str, Any]]) -> int:
    """Replace every layer whose stored arguments differ from the live one; returns how many."""
    live = layer_specs(model)
    replaced = 0
    for name, spec in specs.items():
        if live.get(name) == spec:
            continue
        if spec["type"] not in LAYER_SPECS:
            raise CheckpointError(
                f"layer {name!r} has type {spec['type']!r}, which this version cannot rebuild "
                f"(known: {sorted(LAYER_SPECS)})"
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
            layer = LAYER_SPECS[spec["type"]].cls(**args)
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
