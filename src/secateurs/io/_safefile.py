"""One file = safetensors tensors + a JSON header + a SHA-256 digest over both.

safetensors never executes code on load, which is why it is the only container we use.
The digest is an integrity check, not a signature: it catches truncation, bit rot and
hand edits of the header or the tensors (anyone can recompute it, so it does not
authenticate the author).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as serialize

from .._atomic import atomic_write
from ..errors import CheckpointError, FileSystemError

FORMAT = "secateurs"
HEADER_KEY = "secateurs.header"
DIGEST_KEY = "secateurs.sha256"


def _digest(tensors: dict[str, torch.Tensor], header_json: str) -> str:
    h = hashlib.sha256(header_json.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def write(path: str | os.PathLike, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> Path:
    """Write ``tensors`` and a JSON-able ``header`` atomically to ``path``."""
    # Clones break storage sharing (tied weights), which safetensors refuses to save.
    flat = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    header_json = json.dumps(header, sort_keys=True)
    metadata = {"format": FORMAT, HEADER_KEY: header_json, DIGEST_KEY: _digest(flat, header_json)}
    return atomic_write(path, lambda tmp: save_file(flat, tmp, metadata))


def save_file(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors' ``save_file``, except that the bytes are written by Python: a full disk
    or a read-only folder is then an OSError naming its cause (safetensors' own writer
    reports it as a SafetensorError)."""
    data = serialize(tensors, metadata=metadata)
    with open(path, "wb") as f:
        f.write(data)


#: Leading bytes -> what a file that is not safetensors most likely is. Read, never unpickled.
_PICKLE_SIGNS: dict[bytes, str] = {
    b"PK\x03\x04": "a zip archive, the format of torch.save, which holds a pickle",
    **{bytes([0x80, p]): f"a pickle (protocol {p}), the format of older torch.save files" for p in range(2, 6)},
}


def _pickle_kind(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return None
    return next((kind for sign, kind in _PICKLE_SIGNS.items() if head.startswith(sign)), None)


def _not_safetensors(path: Path, e: Exception) -> CheckpointError:
    kind = _pickle_kind(path)
    if kind is not None:
        return CheckpointError(
            f"checkpoint {str(path)!r} is {kind}; secateurs never loads pickles, since unpickling can run any "
            "code. Convert it: load its state_dict into the model and secateurs.save() it as .safetensors "
            "(README, 'Bringing a PyTorch .pt checkpoint')."
        )
    return CheckpointError(
        f"checkpoint {str(path)!r} is not a readable safetensors file ({e}); it may be truncated or "
        "corrupted. Re-create it, or restore it from a copy."
    )


def read(path: str | os.PathLike, device: str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify a file written by :func:`write`.

    Raises:
        CheckpointError: the file is missing, is not a secateurs file, is truncated, or its
            digest does not match (tampered or corrupted).
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a directory; pass the .safetensors file in it")
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not exist (expected a .safetensors file written by secateurs)"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except PermissionError as e:
        raise FileSystemError.wrap(e, "cannot read", path) from e
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as e:
        raise _not_safetensors(path, e) from e
    if metadata.get("format") != FORMAT or HEADER_KEY not in metadata or DIGEST_KEY not in metadata:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is a safetensors file but not one written by secateurs.save "
            f"(metadata keys: {sorted(metadata)}). Load plain weights with safetensors.torch.load_file."
        )
    header_json = metadata[HEADER_KEY]
    if _digest(tensors, header_json) != metadata[DIGEST_KEY]:
        raise CheckpointError(
            f"checkpoint {str(path)!r} failed its integrity check: its tensors or header changed after "
            "it was written (tampered or corrupted). Re-create it, or restore it from a copy."
        )
    try:
        header = json.loads(header_json)
    except json.JSONDecodeError as e:  # cannot happen with a matching digest, kept for clarity
        raise CheckpointError(f"checkpoint {str(path)!r} has an unreadable header: {e}") from e
    if device != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors, header
