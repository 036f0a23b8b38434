"""The pruning engine: torch.fx tracing, channel groups, exact physical surgery, kernel
masks and constant folding."""

from ..errors import PruningError, TraceError
from ._handlers import FUNCTION_HANDLERS, METHOD_HANDLERS, MODULE_HANDLERS, NAMED_FUNCTION_HANDLERS
from ._layers import SURGEONS
from ._state import Member
from .fold import FoldReport, fold_constant_channels, fold_refusals
from .groups import ChannelGraph, ChannelGroup, Unit
from .masks import KernelMasks, apply_kernel_masks
from .materialize import MaterializeReport, materialize
from .surgery import prune_channels, remove_units
from .trace import symbolic_trace, trace

__all__ = [
    "ChannelGraph",
    "ChannelGroup",
    "FUNCTION_HANDLERS",
    "FoldReport",
    "KernelMasks",
    "METHOD_HANDLERS",
    "MODULE_HANDLERS",
    "NAMED_FUNCTION_HANDLERS",
    "MaterializeReport",
    "Member",
    "PruningError",
    "SURGEONS",
    "TraceError",
    "Unit",
    "apply_kernel_masks",
    "fold_constant_channels",
    "fold_refusals",
    "materialize",
    "prune_channels",
    "remove_units",
    "symbolic_trace",
    "trace",
]
