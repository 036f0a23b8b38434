"""Read the pickled CIFAR "python version" batches without running anything from the file.

``pickle.load`` calls whatever callable a file names, so a tampered batch could run any
command. The real batches (pickled by Python 2 numpy, protocol 2) name only the three
globals an ndarray needs; this unpickler hands out exactly those and refuses the rest.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError

try:  # numpy >= 2 moved the module; pickles written by either name it their own way
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct


def _latin1_bytes(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` limited to the one call Python 3 uses to write ``bytes`` at protocol 2."""
    # Compare the name as written: codecs.lookup would import codec modules named by the file.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError(f"refused _codecs.encode({type(text).__name__}, {encoding!r}, {errors!r})")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # Python 2 / numpy 1 writers
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy 2 writers
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # A batch re-pickled by Python 3 at protocol 2 spells each bytes object as
    # _codecs.encode(str, "latin1"); the original files do not need it.
    ("_codecs", "encode"): _latin1_bytes,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DatasetError(
                f"{self._path}: refused to load global {module}.{name}; a CIFAR batch holds only numpy "
                "arrays and lists, so this file is not a genuine CIFAR batch (it may be malicious). "
                "Download the dataset again from https://www.cs.toronto.edu/~kriz/cifar.html"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise DatasetError(f"{self._path}: refused persistent id {pid!r}; not a genuine CIFAR batch")


def load_restricted(path: Path) -> Any:
    """Unpickle ``path`` allowing only numpy array reconstruction.

    Raises:
        DatasetError: the file names any other global, or is not a readable pickle.
    """
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, path).load()
    except DatasetError:
        raise
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror})") from e
    except Exception as e:  # any unpickling failure means a truncated or foreign file
        raise DatasetError(
            f"{path}: not a readable CIFAR python batch ({type(e).__name__}: {e}); the file is truncated "
            "or corrupt, download it again from https://www.cs.toronto.edu/~kriz/cifar.html"
        ) from e
