"""One object per layer type, in one table: what tracing, folding, surgery, MACs counting,
the budget's cost model and checkpoints need to know about a kind of module.

A :class:`LayerType` bundles optional parts; a part left ``None`` means that part of the
library does not know the type and does the safe thing (the trace keeps its channels,
surgery refuses to narrow it, the fold refuses to pass a constant through it, it counts
zero MACs, a checkpoint does not rebuild it). :func:`register_layer` adds one at run time.

Lookups go through the module's class hierarchy (``type(m).__mro__``), so a subclass that
only changes ``forward`` is narrowed, counted and rebuilt as its base, except the trace
handler (:func:`flow_type`), which needs the exact type: a subclass's forward may move
channels differently, and an unknown forward is never guessed at.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ...errors import ConfigError

ROLES = ("out", "bn")


@dataclass(frozen=True)
class LayerCost:
    """A layer's MACs and params as functions of the channels removed (the budget's cost model)."""

    kind: str  # conv / linear / bn
    in_ch: int = 0
    out_ch: int = 0
    groups: int = 1
    depthwise: bool = False
    kernel: int = 1  # kernel elements per (in, out) pair
    positions: int = 0  # output positions per sample (per output feature for Linear)
    bias: bool = False

    def cost(self, r_in: int, r_out: int) -> tuple[float, float]:
        """(MACs, params) with ``r_in`` input and ``r_out`` output channels removed."""
        out = self.out_ch - r_out
        if self.kind == "bn":
            return 0.0, 2.0 * out
        if self.kind == "linear":
            w = out * (self.in_ch - r_in)
            return float(w * self.positions), float(w + (out if self.bias else 0))
        per_group_in = 1 if self.depthwise else (self.in_ch - r_in) / self.groups
        w = out * per_group_in * self.kernel
        return float(w * self.positions), float(w + (out if self.bias else 0))


@dataclass(frozen=True)
class LayerType:
    """Everything the library knows about the module classes in ``classes``.

    Attributes:
        name: for messages, e.g. ``"conv"``.
        classes: the module classes it describes (subclasses are found through the MRO).
        role: ``"out"`` for a producer whose output channels a request names (a conv, a
            linear: the rows of its ``weight``, which the criteria score), ``"bn"`` for
            per-channel parameters (``weight``/``bias`` per channel), None otherwise.
        channel_dim: where its output channels are (1; -1 for Linear's features).
        flow: trace handler ``(state, node, out, args, kwargs) -> output id tensor``
            (see ``graph/_flow.py``); it mints ids for produced channels and records in
            which role each channel lives. None: the trace keeps every channel it touches.
        shape_preserving: output has the input's shape and dtype (meta runs skip it).
        fold: fold rule ``(walk, node, src, values) -> values | None`` (see
            ``graph/_fold_rules.py``): how a constant channel passes, or is absorbed.
        fold_back: ``(walk, node, channel) -> input channel | None``: touches the places
            output ``channel`` lives in this layer; returns the input channel it comes
            from when the layer passes channels one to one (BN, depthwise conv), None at a
            producer. Layers without it end the fold's walk back to the producer.
        input_shift: a buffer an additive constant on the input can be subtracted from
            (BN: ``"running_mean"``); the fold shifts it for a bias-free producer.
        prune: surgery ``(journal, module, {role: indices}) -> None``: narrows the module
            in place through the journal (see ``_surgery.py``), for every role it holds.
        widths: ``module -> (input channels, output channels)`` (0 when it has no input role).
        macs: ``(module, inputs, output, sparse) -> MACs`` of one call.
        kernels: its ``weight`` is ``[out, in/groups, *kernel]`` with ``in_channels`` and
            ``groups`` attributes: kernel masks, kernel counts and sparse MACs apply.
        cost: ``(module, output) -> LayerCost | None`` for the budget solver.
        spec: ``module -> constructor keyword arguments``, so a checkpoint can rebuild a
            narrowed layer (stored under the class name; the class must accept them back).
    """

    name: str
    classes: tuple[type[nn.Module], ...]
    role: str | None = None
    channel_dim: int = 1
    flow: Callable[..., Any] | None = None
    shape_preserving: bool = False
    fold: Callable[..., Any] | None = None
    fold_back: Callable[..., int | None] | None = None
    input_shift: str | None = None
    prune: Callable[..., None] | None = None
    widths: Callable[[nn.Module], tuple[int, int]] | None = None
    macs: Callable[[nn.Module, tuple, torch.Tensor, bool], int] | None = None
    kernels: bool = False
    cost: Callable[[nn.Module, torch.Tensor], LayerCost | None] | None = None
    spec: Callable[[nn.Module], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        bad = [c for c in self.classes if not (isinstance(c, type) and issubclass(c, nn.Module))]
        if not self.classes or bad:
            raise ConfigError(f"layer type {self.name!r}: classes must be nn.Module subclasses, got {self.classes!r}")
        if self.role not in (None, *ROLES):
            raise ConfigError(f"layer type {self.name!r}: role {self.role!r} is not one of None, {ROLES}")
        if self.prune is not None and self.widths is None:
            raise ConfigError(
                f"layer type {self.name!r} has prune but no widths, which surgery checks removals against"
            )
        if self.role is not None and (self.prune is None or self.widths is None or self.flow is None):
            raise ConfigError(
                f"layer type {self.name!r} has role {self.role!r}, so a request may name its channels: "
                "give it flow (to find them), prune (to remove them) and widths (to check the indices)"
            )


#: Module class -> its layer type; one entry per class, written by :func:`register_layer`.
LAYER_TYPES: dict[type[nn.Module], LayerType] = {}


def register_layer(layer: LayerType, replace: bool = False) -> LayerType:
    """Teach the library a layer type, for every class in ``layer.classes``.

    Args:
        layer: the type's description.
        replace: allow replacing a registered type of one of the classes (a built-in too).

    Raises:
        ConfigError: a class is registered already (and ``replace`` is False), or a class
            with a ``spec`` has the name of another class that checkpoints store by name.
    """
    if not isinstance(layer, LayerType):
        raise ConfigError(f"register_layer takes a LayerType, got {type(layer).__name__}")
    for cls in layer.classes:
        old = LAYER_TYPES.get(cls)
        if old is not None and old is not layer and not replace:
            raise ConfigError(
                f"{cls.__qualname__} is registered already as layer type {old.name!r}; pass replace=True to replace it"
            )
        if layer.spec is not None:
            twin = spec_classes().get(cls.__name__)
            if twin is not None and twin is not cls:
                raise ConfigError(
                    f"checkpoints store layers by class name, and {cls.__name__!r} is already "
                    f"{twin.__module__}.{twin.__qualname__}; rename the class or leave spec=None"
                )
    for cls in layer.classes:
        LAYER_TYPES[cls] = layer
    return layer


def unregister_layer(layer: LayerType) -> None:
    """Remove ``layer``'s classes that it still holds in the table."""
    for cls in layer.classes:
        if LAYER_TYPES.get(cls) is layer:
            del LAYER_TYPES[cls]


def layer_type(module: nn.Module) -> LayerType | None:
    """The layer type of ``module``'s class or its nearest registered base class."""
    for cls in type(module).__mro__:
        layer = LAYER_TYPES.get(cls)
        if layer is not None:
            return layer
    return None


def flow_type(module: nn.Module) -> LayerType | None:
    """The layer type registered for exactly ``type(module)``: what the trace reads."""
    return LAYER_TYPES.get(type(module))


def spec_classes() -> dict[str, type[nn.Module]]:
    """Class name -> class, for the types a checkpoint can rebuild."""
    return {cls.__name__: cls for cls, layer in LAYER_TYPES.items() if layer.spec is not None}


def role_of(module: nn.Module) -> str | None:
    """``"out"``, ``"bn"`` or None: the role in which a request names ``module``'s channels."""
    layer = layer_type(module)
    return None if layer is None else layer.role


def out_width(module: nn.Module) -> int | None:
    """Output channels of a layer of known widths (a conv's ``out_channels``, a BN's ``num_features``)."""
    layer = layer_type(module)
    return None if layer is None or layer.widths is None else layer.widths(module)[1]


def out_widths(model: nn.Module) -> dict[str, int]:
    """Output width of every producer (role ``"out"``: convs, linears), by module name."""
    return {name: out_width(m) for name, m in model.named_modules() if role_of(m) == "out"}


def has_kernels(module: nn.Module) -> bool:
    """Whether ``module`` has kernels ``weight[out, in/groups]`` (a conv): see ``LayerType.kernels``."""
    layer = layer_type(module)
    return layer is not None and layer.kernels
