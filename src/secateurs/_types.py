"""Type checks for option dataclasses: a recipe's ``rounds: true`` or ``lr: "x"`` is refused
with the key named, instead of failing later (or silently doing something else)."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from .errors import ConfigError

_NAMES = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a text",
    dict: "a mapping",
    list: "a list",
    type(None): "null",
}


def _fits(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, t) for t in typing.get_args(tp))
    if origin is not None:
        tp = origin
    if tp is Any:
        return True
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp) if isinstance(tp, type) else True


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(t) for t in typing.get_args(tp))
    return _NAMES.get(origin or tp, getattr(tp, "__name__", str(tp)))


def _unknown_keys(cls: type, data: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(keys of ``data`` that are not fields of ``cls``, the field names), both sorted."""
    known = sorted(f.name for f in dataclasses.fields(cls))
    return sorted(set(data) - set(known)), known


def _check_types(values: dict[str, Any], hints: dict[str, Any], what: str) -> None:
    for name, value in values.items():
        tp = hints.get(name, Any)
        if not _fits(value, tp):
            raise ConfigError(f"{what} {name!r} must be {_describe(tp)}, got {value!r}")


def from_known_fields(cls: type, data: dict[str, Any], what: str) -> Any:
    """``cls(**data)``, refusing keys that are not fields of ``cls`` by name (a typo must not
    fall back silently to a default)."""
    unknown, known = _unknown_keys(cls, data)
    if unknown:
        raise ConfigError(f"unknown {what}(s) {unknown}; valid: {known}")
    return cls(**data)


def check_field_types(obj: Any, what: str = "option") -> None:
    """Raise :class:`ConfigError` naming the first field whose value is not of its annotated type."""
    _check_types(
        {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}, typing.get_type_hints(type(obj)), what
    )


def build_options(cls: type, values: dict[str, Any] | None, owner: str) -> Any:
    """An options dataclass ``cls`` of ``owner`` (e.g. "method 'fcs'") from ``values``: an unknown
    key names the valid ones, and a bad value or type names the option."""
    values = dict(values or {})
    unknown, known = _unknown_keys(cls, values)
    if unknown:
        raise ConfigError(f"{owner} has no option(s) {unknown}; its options are: {', '.join(known) or 'none'}")
    # Types first: the class's own checks in __post_init__ may trip over a wrong type unhelpfully.
    _check_types(values, typing.get_type_hints(cls), f"option of {owner}")
    try:
        options = cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad option for {owner}: {e}") from e
    check_field_types(options, f"option of {owner}")
    return options
