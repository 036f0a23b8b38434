"""Which trace handler each op gets: layer types for modules, tables for functions and
tensor methods (the handlers themselves are in ``_flow.py`` and ``layers/``).

Ops not found stop every channel they touch: an op the engine does not know is never
assumed to be element-wise.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from ._flow import (
    cat,
    channelwise,
    elementwise,
    get_attr,
    getitem,
    placeholder,
    reduction,
    reshape_like,
    split_like,
    tensors_in,
    transpose_like,
    unknown,
)
from ._state import State
from .layers import flow_type, layer_type
from .layers import kinds as K

Handler = Callable[[State, torch.fx.Node, Any, tuple, dict], Any]

__all__ = [
    "FUNCTION_HANDLERS",
    "METHOD_HANDLERS",
    "NAMED_FUNCTION_HANDLERS",
    "Handler",
    "function_handler",
    "get_attr",
    "module_handler",
    "placeholder",
    "shape_preserving",
    "tensors_in",
    "unknown",
]


def module_handler(module: nn.Module) -> Handler:
    """The trace handler of a module: its exact type's ``LayerType.flow``, else ``unknown``."""
    layer = flow_type(module)
    return unknown if layer is None or layer.flow is None else layer.flow


def shape_preserving(module: nn.Module) -> bool:
    """Whether the module's output has its input's shape and dtype (meta runs skip its work)."""
    layer = layer_type(module)
    return layer is not None and layer.shape_preserving


FUNCTION_HANDLERS: dict[Any, Handler] = {
    **{f: channelwise for f in (*K.POINTWISE_FUNCTIONS, *K.SAME_VALUE_FUNCTIONS, *K.AVG_POOL_FUNCTIONS, F.pad)},
    **{f: elementwise for f in K.ARITHMETIC_FUNCTIONS},
    **{f: cat for f in K.CAT_FUNCTIONS},
    **{f: reshape_like for f in K.RESHAPE_FUNCTIONS},
    torch.transpose: transpose_like,
    torch.permute: transpose_like,
    torch.chunk: split_like,
    torch.split: split_like,
    torch.tensor_split: split_like,
    operator.getitem: getitem,
    **{f: reduction for f in K.REDUCTION_FUNCTIONS},
}

#: Functions of optional packages, by ``module.qualname``, so the engine imports none of them.
NAMED_FUNCTION_HANDLERS: dict[str, Handler] = {
    # Identity in eval; in training one random factor per sample (or per batch): never mixes channels.
    "torchvision.ops.stochastic_depth.stochastic_depth": channelwise,
}


def function_handler(target: Any) -> Handler:
    """The handler of a called function: by identity, else by qualified name, else ``unknown``."""
    handler = FUNCTION_HANDLERS.get(target)
    if handler is None:
        name = f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}"
        handler = NAMED_FUNCTION_HANDLERS.get(name, unknown)
    return handler


METHOD_HANDLERS: dict[str, Handler] = {
    **{m: channelwise for m in (*K.POINTWISE_METHODS, *K.SAME_VALUE_METHODS, "type_as")},
    **{m: elementwise for m in K.ARITHMETIC_METHODS},
    **{m: reshape_like for m in K.RESHAPE_METHODS},
    **{m: transpose_like for m in ("transpose", "permute")},
    **{m: split_like for m in ("chunk", "split", "tensor_split")},
    **{m: reduction for m in K.REDUCTION_METHODS},
}
