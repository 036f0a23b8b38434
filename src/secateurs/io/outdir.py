"""The write-safety rule, in one place: a command replaces or deletes only what it writes.

Every command that writes (``train``, ``prune``, ``export``, ``demo``) names its outputs
and calls :func:`claim` before it writes anything, so a refused command leaves the disk
as it found it:

* an output that already exists was not written by this run, so it is refused unless the
  user passed ``--overwrite``; even then only the named outputs are replaced, never
  anything else beside them (a resumed run is the same run and does not claim);
* an output that is the model the command reads (``--from``) is refused whatever the
  flags, since the command would destroy its own input;
* an output that is a directory, or whose folder is a file, is refused with the cause.

Deleting goes through :func:`discard`, which removes only the files it is given.

Example::

    >>> claim([Path("runs/a/model.safetensors")], overwrite=False)  # nothing there: fine
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import ConfigError, FileSystemError
from .checkpoint import resolve


def _folder_is_a_file(target: Path) -> bool:
    """Whether the nearest existing ancestor of ``target`` is a file, so its folder cannot be made."""
    nearest = next((folder for folder in target.parents if folder.exists()), None)
    return nearest is not None and not nearest.is_dir()


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _check_place(target: Path) -> None:
    if target.is_dir():
        raise FileSystemError.wrap(OSError(errno.EISDIR, "is a directory"), "cannot write", target)
    if _folder_is_a_file(target):
        raise FileSystemError.wrap(OSError(errno.ENOTDIR, "not a directory"), "cannot write", target)


def claim(
    outputs: Sequence[str | os.PathLike],
    *,
    overwrite: bool = False,
    source: str | os.PathLike | None = None,
    overwrite_flag: str | None = "--overwrite",
    other_way: str = "",
) -> None:
    """Refuse, before anything is written, a command that would replace what it did not write.

    Args:
        outputs: every file the command is about to write.
        overwrite: the user asked for ``outputs`` to be replaced if they exist.
        source: the checkpoint the command reads (a file or a run directory); an output
            that is this file is refused even with ``overwrite``.
        overwrite_flag: how the user asks to overwrite; None where the command has no such
            flag, so the message only offers another path.
        other_way: a further way out the command offers, e.g. ``--resume`` of its own run.

    Raises:
        ConfigError: an output exists (without ``overwrite``) or is the source.
        FileSystemError: an output is a directory, or a file stands where its folder must be.
    """
    targets = [Path(p) for p in outputs]
    if source is not None:
        src = resolve(source)
        for target in targets:
            if _same_file(target, src):
                raise ConfigError(
                    f"--out would write {str(target)!r}, which is the model read with --from "
                    f"{str(source)!r}; the command would destroy its own input. Choose another --out"
                )
    for target in targets:
        _check_place(target)
    existing = [t for t in targets if t.exists() or t.is_symlink()]
    if existing and not overwrite:
        one = len(existing) == 1
        it = "it" if one else "them"
        way_out = (
            f"pass {overwrite_flag} to replace {it}, or choose another --out"
            if overwrite_flag
            else f"choose another --out, or move {it} away"
        )
        raise ConfigError(
            f"{', '.join(repr(str(t)) for t in existing)} already exist{'s' if one else ''} and this "
            f"run did not write {it}; {way_out}{other_way}"
        )


def discard(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Delete exactly these files (missing ones are skipped; a directory is never removed).

    Returns:
        The files deleted.
    """
    removed = []
    for path in map(Path, paths):
        if path.is_dir() and not path.is_symlink():
            raise ConfigError(f"{str(path)!r} is a directory where a file was expected; move it away")
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise FileSystemError.wrap(e, "cannot delete", path) from e
        removed.append(path)
    return removed
