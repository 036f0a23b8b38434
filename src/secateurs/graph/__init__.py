"""The pruning engine: torch.fx tracing, channel groups, exact physical surgery, kernel
masks and constant folding; what it knows per layer type is in ``layers/``."""

from ..errors import PruningError, TraceError
from ._calls import LayerCalls
from ._handlers import FUNCTION_HANDLERS, METHOD_HANDLERS, NAMED_FUNCTION_HANDLERS
from ._state import Member
from .fold import FoldReport, fold_constant_channels, fold_refusals
from .groups import ChannelGraph, ChannelGroup, Unit
from .layers import LAYER_TYPES, LayerType, layer_type, register_layer, unregister_layer
from .masks import KernelMasks, apply_kernel_masks
from .materialize import MaterializeReport, materialize
from .surgery import cut, prune_channels, remove_units
from .trace import symbolic_trace, trace

__all__ = [
    "ChannelGraph",
    "ChannelGroup",
    "FUNCTION_HANDLERS",
    "FoldReport",
    "KernelMasks",
    "LayerCalls",
    "LAYER_TYPES",
    "LayerType",
    "METHOD_HANDLERS",
    "NAMED_FUNCTION_HANDLERS",
    "MaterializeReport",
    "Member",
    "PruningError",
    "TraceError",
    "Unit",
    "apply_kernel_masks",
    "cut",
    "fold_constant_channels",
    "fold_refusals",
    "layer_type",
    "materialize",
    "prune_channels",
    "register_layer",
    "remove_units",
    "symbolic_trace",
    "trace",
    "unregister_layer",
]
