"""Layer types: one object per kind of layer, registered in one table.

A :class:`LayerType` holds everything the library needs to know about a module class:
how channels flow through it when tracing, how a constant channel passes it or is
absorbed (folding), how to narrow it (surgery), its widths, its MACs, its cost as a
function of the channels removed (the budget), and its constructor arguments
(checkpoints). Teaching the library a new layer is one object and one call::

    import secateurs
    from secateurs.graph.layers import CONV, LayerType

    # A conv subclass with its own forward, traced as a leaf: handled like a conv.
    secateurs.register_layer(dataclasses.replace(CONV, name="my-conv", classes=(MyConv,)))

See :class:`LayerType` for each part, and ``conv.py`` / ``linear.py`` / ``norm.py`` for
worked examples. The type tuples and activation lists are in ``kinds.py``.
"""

from . import kinds
from ._kernels import nonzero_kernels, working_kernels
from ._registry import (
    LAYER_TYPES,
    LayerCost,
    LayerType,
    flow_type,
    has_kernels,
    layer_type,
    out_width,
    out_widths,
    register_layer,
    role_of,
    spec_classes,
    unregister_layer,
)
from ._surgery import Journal, keep_indices, narrow, narrow_param
from .channelwise import ACTIVATION, AVG_POOL, FLATTEN, IDENTITY, PAD, POOL
from .conv import CONV, CONV_TRANSPOSE
from .linear import LINEAR, dense_flow
from .norm import BATCHNORM, GROUPNORM, LAYERNORM

BUILTIN = (
    CONV,
    CONV_TRANSPOSE,
    LINEAR,
    BATCHNORM,
    GROUPNORM,
    LAYERNORM,
    ACTIVATION,
    IDENTITY,
    POOL,
    AVG_POOL,
    PAD,
    FLATTEN,
)
for _layer in BUILTIN:
    register_layer(_layer)

__all__ = [
    "ACTIVATION",
    "AVG_POOL",
    "BATCHNORM",
    "BUILTIN",
    "CONV",
    "CONV_TRANSPOSE",
    "FLATTEN",
    "GROUPNORM",
    "IDENTITY",
    "LAYERNORM",
    "LAYER_TYPES",
    "LINEAR",
    "Journal",
    "LayerCost",
    "LayerType",
    "PAD",
    "POOL",
    "flow_type",
    "has_kernels",
    "keep_indices",
    "kinds",
    "layer_type",
    "narrow",
    "narrow_param",
    "nonzero_kernels",
    "out_width",
    "out_widths",
    "register_layer",
    "role_of",
    "spec_classes",
    "unregister_layer",
    "dense_flow",
    "working_kernels",
]
