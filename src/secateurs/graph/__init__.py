"""The pruning engine: torch.fx tracing, channel groups, exact physical surgery."""
from ..errors import PruningError, TraceError
from ._handlers import FUNCTION_HANDLERS, METHOD_HANDLERS, MODULE_HANDLERS
from ._layers import SURGEONS
from ._state import Member
from .groups import ChannelGraph, ChannelGroup, Unit
from .surgery import prune_channels, remove_units
from .trace import symbolic_trace, trace

__all__ = ["ChannelGraph", "ChannelGroup", "FUNCTION_HANDLERS", "METHOD_HANDLERS", "MODULE_HANDLERS", "Member",
           "PruningError", "SURGEONS", "TraceError", "Unit", "prune_channels", "remove_units", "symbolic_trace",
           "trace"]
