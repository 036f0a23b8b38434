"""Modules that move channels one to one (activations, dropout, pooling, padding,
upsampling) and ``nn.Flatten``: no parameters to narrow, no MACs counted."""

from __future__ import annotations

import torch

from .. import _ids
from .._flow import channelwise, describe, module_of, stop_all
from .._fold_ops import avg_pool, pointwise_module, reshape, same
from .._state import State
from ._registry import LayerType
from .kinds import ACTIVATIONS, AVG_POOLS, PADS, PASSTHROUGH, SAME_VALUE

ACTIVATION = LayerType("activation", ACTIVATIONS, flow=channelwise, shape_preserving=True, fold=pointwise_module)
IDENTITY = LayerType("identity", PASSTHROUGH, flow=channelwise, shape_preserving=True, fold=same)
POOL = LayerType("pool", SAME_VALUE, flow=channelwise, fold=same)
AVG_POOL = LayerType("avg_pool", AVG_POOLS, flow=channelwise, fold=avg_pool)
#: No fold rule: zero padding makes a constant channel non-constant at the borders.
PAD = LayerType("pad", PADS, flow=channelwise)


def flatten_flow(state: State, node, out, args, kwargs):
    m = module_of(node)
    x = args[0]
    ids = torch.flatten(x, m.start_dim, m.end_dim)
    if _ids.keeps_channel_dim(x.shape, ids.shape) or _ids.is_flatten_of_channels(x.shape, ids.shape):
        return ids
    return stop_all(state, out, x, f"{describe(node)} flattens the channel dimension with the batch")


FLATTEN = LayerType("flatten", (torch.nn.Flatten,), flow=flatten_flow, fold=reshape)
