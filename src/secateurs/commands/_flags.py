"""Flags generated from a config dataclass: one ``--flag`` per field, its type from the
field's annotation and its default from the field, so the CLI cannot drift from the API.

    >>> TRAIN = Flags(TrainConfig, {"epochs": "passes over the training set", ...}, "training option")
    >>> TRAIN.add_to(parser)            # --epochs N ... (default: 10)
    >>> TRAIN.given(parser.parse_args(["--epochs", "3"]))
    {'epochs': 3}
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._args import add_options_arg, field_default, show


@dataclass(frozen=True)
class Flags:
    """The ``--flags`` of some fields of ``cls``, and the values the user gave back.

    A field becomes ``--field-name`` (``--PREFIX-field-name`` with ``prefix``): a bool a
    ``--x/--no-x`` switch, a dict a repeatable ``--x-option KEY=VALUE`` (the field's name
    without its plural s), anything else one value of the annotated type. Its help is
    ``help[field]`` followed by the default, read from ``defaults`` where the command's
    defaults differ from the class's, else from the field; a None default shows nothing,
    and the description says what None means. argparse's own default stays None, so only
    flags the user gives override the dataclass, a recipe or a resumed run's saved values.
    """

    cls: type
    help: Mapping[str, str]
    #: A field without help reads "<noun> <field>", which tests/test_cli_safety.py flags.
    noun: str
    fields: Sequence[str] | None = None  # None: every field but those in ``skip``
    skip: Sequence[str] = ()
    prefix: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    choices: Mapping[str, Sequence[str]] = field(default_factory=dict)  # checked by argparse
    metavars: Mapping[str, str] = field(default_factory=dict)
    exclusive: Sequence[Sequence[str]] = ()  # groups of fields of which at most one may be given

    def names(self) -> list[str]:
        every = [f.name for f in dataclasses.fields(self.cls)]
        return [n for n in every if n not in self.skip] if self.fields is None else list(self.fields)

    def dest(self, name: str) -> str:
        return f"{self.prefix}_{name}" if self.prefix else name

    def default(self, name: str) -> Any:
        return self.defaults[name] if name in self.defaults else field_default(self.cls, name)

    def add_to(self, p: argparse.ArgumentParser) -> None:
        hints = typing.get_type_hints(self.cls)
        groups: dict[str, Any] = {}
        for names in self.exclusive:
            group = p.add_mutually_exclusive_group()
            groups.update(dict.fromkeys(names, group))
        for name in self.names():
            target = groups.get(name, p)
            typ, dest = _value_type(hints[name]), self.dest(name)
            flag = "--" + dest.replace("_", "-")
            text = self.help.get(name, f"{self.noun} {name}")
            if typ is dict:  # many KEY=VALUE, one flag each: the singular of the field's name
                add_options_arg(target, flag.removesuffix("s"), dest, text)
                continue
            default = self.default(name)
            if default is not None:
                text += f" (default: {show(default)})"
            if typ is bool:
                target.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=text)
            else:
                target.add_argument(
                    flag,
                    dest=dest,
                    type=typ,
                    default=None,
                    choices=self.choices.get(name),
                    metavar=self.metavars.get(name),
                    help=text,
                )

    def given(self, args: argparse.Namespace) -> dict[str, Any]:
        """The fields whose flags the user gave, by field name (a dict field as a dict)."""
        values = {name: getattr(args, self.dest(name)) for name in self.names()}
        return {k: dict(v) if isinstance(v, list) else v for k, v in values.items() if v not in (None, [])}


def _value_type(hint: Any) -> type:
    """``int`` for ``int | None``; ``dict`` for ``dict[str, Any]``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (hint,) = (a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint
