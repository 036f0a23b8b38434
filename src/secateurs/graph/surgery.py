"""``prune_channels``: validate a whole request first, then remove exactly those channels.

A request names output channels of layers; each one brings its whole unit (every place
the channel lives: coupled producers, BNs, consumers' input slices). Anything that cannot
be honoured exactly raises :class:`PruningError` before the model is touched; a failure
during surgery itself puts every replaced attribute back.
"""

from __future__ import annotations

import difflib
import operator
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch.nn as nn

from ..errors import PruningError
from ._calls import LayerCalls
from .groups import ChannelGraph, Unit, removals
from .layers import Journal, layer_type, out_width
from .trace import MetaInterpreter, trace


def resolve_request(model: nn.Module, graph: ChannelGraph, request: Mapping[str, Iterable[int]]) -> list[Unit]:
    """The units a ``{module_name: [output channel indices]}`` request removes."""
    modules = dict(model.named_modules())
    units: dict[int, Unit] = {}
    for name, indices in request.items():
        if name not in modules:
            close = difflib.get_close_matches(name, list(modules), n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise PruningError(f"the model has no module {name!r}{hint}")
        m = modules[name]
        layer = layer_type(m)
        kind = None if layer is None else layer.role
        if kind is None:
            raise PruningError(
                f"{name!r} is a {type(m).__name__}; name a Conv, Linear or BatchNorm layer whose "
                "output channels to remove (or register its layer type with a role: secateurs.register_layer)"
            )
        width = out_width(m)
        try:
            indices = list(indices)
        except TypeError:
            raise PruningError(f"the channels of {name!r} must be a list of indices, got {indices!r}") from None
        for i in indices:
            i = _as_index(i, name)
            if not 0 <= i < width:
                raise PruningError(
                    f"channel {i} of {name!r} is out of range: it has {width} output channels (0..{width - 1})"
                )
            hit = graph.locate(name, kind, i)
            if hit is None:
                raise PruningError(f"{name!r} did not run in the traced forward, so its channels are unknown")
            group, pos = hit
            unit = group.units[pos]
            if not unit.prunable:
                raise PruningError(f"channel {i} of {name!r} cannot be removed: {unit.reason}")
            units[id(unit)] = unit
    return list(units.values())


def _as_index(i: Any, name: str) -> int:
    """Python, NumPy and 0-d torch integers are channel indices; nothing else is."""
    try:
        if isinstance(i, bool):
            raise TypeError
        return operator.index(i)
    except TypeError:
        raise PruningError(f"channel {i!r} of {name!r} is not an integer index") from None


def _removals(units: Sequence[Unit]) -> dict[str, dict[str, list[int]]]:
    return removals(units)


def removal_problems(model: nn.Module, graph: ChannelGraph, units: Sequence[Unit]) -> dict[str, str]:
    """Why the engine would refuse to remove ``units`` together, by module (empty: it would not).

    The check :func:`remove_units` runs before it touches anything, without touching
    anything: for callers that drop the offending units and retry (``materialize``).
    """
    return _problems(model, graph, _removals(units))


def _problems(
    model: nn.Module,
    graph: ChannelGraph,
    plan: dict[str, dict[str, list[int]]],
    modules: dict[str, nn.Module] | None = None,
) -> dict[str, str]:
    modules = modules if modules is not None else dict(model.named_modules())
    problems: dict[str, str] = {}
    for name, kinds in plan.items():
        m = modules.get(name)
        if m is None:
            problems[name] = f"the graph has a layer {name!r} that the model does not have; trace this model"
            continue
        layer = layer_type(m)
        if layer is None or layer.prune is None:
            problems[name] = (
                f"{name!r} ({type(m).__name__}) holds these channels but the engine cannot narrow that layer type"
            )
            continue
        for kind in ("out", "bn"):
            if kind in kinds and len(kinds[kind]) >= out_width(m):
                problems[name] = (
                    f"the request removes all {out_width(m)} output channels of {name!r}; keep at least one"
                )
        gc = graph.grouped_convs.get(name)
        if gc is not None:
            for kind, n in (("in", gc.in_channels), ("out", gc.out_channels)):
                hits = Counter(gc.group_of(kind, i) for i in kinds.get(kind, []))
                counts = [hits[k] for k in range(gc.groups)]
                if len(set(counts)) > 1:
                    problems[name] = (
                        f"{name!r} is a grouped conv ({gc.groups} groups of {n // gc.groups} {kind}put "
                        f"channels); the request removes {counts} from its groups, which must be equal"
                    )
    return problems


def _validate(
    model: nn.Module, graph: ChannelGraph, plan: dict[str, dict[str, list[int]]], modules: dict[str, nn.Module]
) -> None:
    problems = _problems(model, graph, plan, modules)
    if problems:
        raise PruningError(next(iter(problems.values())))


def remove_units(model: nn.Module, graph: ChannelGraph, units: Sequence[Unit], example_inputs: Any = None) -> nn.Module:
    """Remove ``units`` physically, in place; validated first, undone on any failure.

    Args:
        model: the traced model, or a copy of it (the same module names).
        graph: its :func:`trace`.
        units: units of prunable groups of ``graph``.
        example_inputs: when given, the narrowed model is run on meta tensors through the
            traced graph, and any shape mismatch undoes the surgery.
    """
    cut(model, graph, units, example_inputs)
    return model


def cut(model: nn.Module, graph: ChannelGraph, units: Sequence[Unit], example_inputs: Any = None) -> LayerCalls | None:
    """:func:`remove_units`, returning what its shape check saw: the narrowed model's layer
    calls (its MACs and cost model without a forward), or None without ``example_inputs``."""
    stuck = next((u for u in units if not u.prunable), None)
    if stuck is not None:
        m = stuck.members[0]
        raise PruningError(f"channel {m.index} of {m.module!r} ({m.kind}) cannot be removed: {stuck.reason}")
    plan = _removals(units)
    modules = dict(model.named_modules())
    _validate(model, graph, plan, modules)
    journal = Journal()
    calls = LayerCalls() if example_inputs is not None else None
    try:
        for name, kinds in plan.items():
            layer_type(modules[name]).prune(journal, modules[name], kinds)
        if example_inputs is not None:
            # Every shape of the narrowed model, checked against the traced graph on meta
            # tensors: the safety net costs no arithmetic.
            MetaInterpreter(model, graph=graph.fx_graph, calls=calls).run_meta(example_inputs)
    except Exception as e:
        journal.undo()
        if isinstance(e, PruningError):
            raise
        raise PruningError(f"surgery failed and was undone, the model is unchanged: {type(e).__name__}: {e}") from e
    return calls


def prune_channels(
    model: nn.Module,
    example_inputs: Any,
    request: Mapping[str, Iterable[int]],
    graph: ChannelGraph | None = None,
    leaf_modules: Sequence[type[nn.Module]] = (),
) -> nn.Module:
    """Remove exactly the named output channels and everything coupled to them, in place.

    Args:
        model: the network; afterwards a plain module of narrower layers.
        example_inputs: a tensor or tuple of tensors the model accepts.
        request: ``{module_name: [output channel indices]}`` of Conv, Linear or BatchNorm layers.
        graph: a :func:`trace` of this very model, to skip tracing again.
        leaf_modules: see :func:`trace`.

    Raises:
        PruningError: the request cannot be honoured exactly (unknown module, index out of
            range, the network's own output, a channel crossing a shuffle or a fixed split,
            an uneven removal from a grouped conv, a layer emptied); the model is unchanged.
    """
    graph = graph or trace(model, example_inputs, leaf_modules)
    units = resolve_request(model, graph, request)
    return remove_units(model, graph, units, example_inputs)
