"""Exception types. Every error names the bad value and the way out."""
from __future__ import annotations

import difflib
from typing import Iterable


class SecateursError(Exception):
    """Base class of every error raised on purpose by secateurs."""


class ConfigError(SecateursError, ValueError):
    """A user-supplied option (CLI flag, recipe key, keyword argument) is invalid."""


class DatasetError(SecateursError):
    """A dataset is missing or malformed. The message names the path and how to get it."""


class CheckpointError(SecateursError):
    """A checkpoint is missing, truncated, tampered with, or does not fit the model."""


def unknown_choice(kind: str, value: str, choices: Iterable[str]) -> ConfigError:
    """Build the error for a name that is not registered, with close matches as the way out."""
    choices = sorted(choices)
    close = difflib.get_close_matches(value, choices, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ConfigError(f"unknown {kind} {value!r}.{hint} Valid choices: {', '.join(choices)}.")


class PruningError(SecateursError):
    """A pruning request cannot be honoured exactly. The model was left untouched."""


class TraceError(SecateursError):
    """A model could not be traced into a graph; the message names the module or op."""
