"""Recipes: a YAML file holding any :class:`PruneConfig` option.

    method: l1-capped
    macs_reduction: 0.5
    rounds: 3
    finetune_epochs: 6
    finetune_train: {lr: 0.01, batch_size: 128}
    method_options: {alpha: 0.5, q: 0.5}

Values are checked when the config is built; a key that is not an option is refused
by name (a typo must not silently fall back to a default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .config import PruneConfig

#: Options that are mappings: given on top of a recipe, their keys are merged into the
#: recipe's (``--finetune-option temperature=4`` keeps the recipe's ``peer: pruned``).
NESTED = ("finetune_train", "method_options", "finetune_options")


def read_recipe(path: str | Path) -> dict[str, Any]:
    """The recipe's options as a dict (validated by :meth:`PruneConfig.from_dict` later)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"recipe {str(path)!r} does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {str(path)!r} is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {str(path)!r} must be a mapping of option: value, got a {type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"recipe {str(path)!r} has non-text keys {bad}")
    for key in NESTED:
        if key in data and not isinstance(data[key], dict):
            raise ConfigError(f"recipe key {key!r} must be a mapping, got {data[key]!r}")
    return data


def load_recipe(path: str | Path, **overrides: Any) -> PruneConfig:
    """A :class:`PruneConfig` from a recipe, with ``overrides`` (e.g. CLI flags) on top."""
    data = read_recipe(path)
    if {"macs_reduction", "params_reduction"} & {k for k, v in overrides.items() if v is not None}:
        data.pop("macs_reduction", None)  # a target given on top replaces the recipe's
        data.pop("params_reduction", None)
    for key in NESTED:
        if key in overrides and key in data:
            overrides[key] = {**data[key], **overrides[key]}
    try:
        return PruneConfig.from_dict({**data, **overrides})
    except ConfigError as e:
        raise ConfigError(f"recipe {str(path)!r}: {e}") from e
