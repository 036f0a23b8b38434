"""Exception types. Every error names the bad value and the way out."""

from __future__ import annotations

import difflib
import errno
import os
from collections.abc import Iterable


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


class FileSystemError(SecateursError, OSError):
    """The operating system refused a read or write; the message names the path and the cause.

    An :class:`OSError` too, so code that catches ``OSError`` around secateurs keeps working.
    """

    @classmethod
    def wrap(cls, e: OSError, verb: str, path: str | os.PathLike) -> FileSystemError:
        """``verb 'path': cause; way out`` for ``e``, keeping its errno for callers that test it."""
        err = cls(f"{verb} {describe_os_error(e, path)}")
        err.errno = e.errno
        return err


#: errno -> (what happened, the way out). A code not listed falls back to the OS's words.
OS_CAUSES: dict[int, tuple[str, str]] = {
    errno.EROFS: ("read-only file system", "choose a path on a writable file system"),
    errno.ENOSPC: ("no space left on device", "free some space or choose another path"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or choose another path"),
    errno.EACCES: ("permission denied", "check its permissions or choose another path"),
    errno.EPERM: ("operation not permitted", "check its permissions or choose another path"),
    errno.EISDIR: ("is a directory", "name a file, not a directory"),
    errno.ENOTDIR: ("not a directory", "a part of the path is a file; choose another path"),
    errno.ENOENT: ("no such file or directory", "check the path"),
    errno.EEXIST: ("already exists", "choose another path"),
    errno.ENAMETOOLONG: ("file name too long", "choose a shorter path"),
}


def describe_os_error(e: OSError, path: str | os.PathLike | None = None) -> str:
    """One line naming the path and the cause of ``e`` in words, plus the way out."""
    where = path if path is not None else (e.filename if e.filename is not None else None)
    cause, way_out = OS_CAUSES.get(e.errno, (e.strerror or str(e), "")) if e.errno is not None else (str(e), "")
    text = f"{str(where)!r}: {cause}" if where is not None else cause
    return f"{text}; {way_out}" if way_out else text
