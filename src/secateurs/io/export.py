"""Export a (pruned) model to ONNX or TorchScript, atomically, and check the ONNX result.

Exported files are what gets deployed, so a file at the destination is always complete
and checked: it is written to a temporary name beside the target, checked, then renamed.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn as nn

from .._atomic import atomic_write
from .._version import __version__
from ..errors import ConfigError, SecateursError, unknown_choice
from ..measure._common import eval_mode, model_device_dtype, sample_shape

#: ``fn(model, example_input, tmp_path, opset, metadata)`` writes one format to ``tmp_path``,
#: with the string pairs of ``metadata`` where a deployment tool can read them.
Exporter = Callable[[nn.Module, torch.Tensor, Path, int, dict[str, str]], None]

#: The name of the metadata inside a TorchScript archive.
METADATA_FILE = "secateurs.json"


def _require(package: str) -> ModuleType:
    """Import an optional dependency, or say how to install it."""
    try:
        return importlib.import_module(package)
    except ImportError as e:
        raise ConfigError(
            f"exporting to ONNX needs the {package!r} package, which is not installed; "
            f"run `pip install secateurs[export]`"
        ) from e


def _export_onnx(model: nn.Module, x: torch.Tensor, tmp: Path, opset: int, metadata: dict[str, str]) -> None:
    onnx = _require("onnx")
    # The TorchScript-based exporter (dynamo=False) is chosen on purpose: it handles plain
    # CNNs with a dynamic batch through dynamic_axes and needs no onnxscript at runtime.
    # Its deprecation warnings would only alarm users who cannot act on them.
    # torch < 2.5 has no `dynamo` argument and always uses that exporter.
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (x,),
            str(tmp),
            **legacy,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset,
        )
    if metadata:  # the model's metadata_props, which onnxruntime and netron show
        proto = onnx.load(str(tmp))
        onnx.helper.set_model_props(proto, metadata)
        onnx.save(proto, str(tmp))
    # Check the temporary file, so a model the checker rejects never reaches the target.
    onnx.checker.check_model(str(tmp))


def _export_torchscript(model: nn.Module, x: torch.Tensor, tmp: Path, opset: int, metadata: dict[str, str]) -> None:
    # Tracing suffices for CNNs (no data-dependent control flow) and, unlike scripting,
    # accepts any Python in forward. ``opset`` is ONNX-only and ignored here. The metadata
    # travels as an extra file, read back with torch.jit.load(path, _extra_files=...).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model, x)
        torch.jit.save(traced, str(tmp), _extra_files={METADATA_FILE: json.dumps(metadata, sort_keys=True)})


#: Format name -> exporter. Add a format here.
EXPORT_FORMATS: dict[str, Exporter] = {
    "onnx": _export_onnx,
    "torchscript": _export_torchscript,
}


def _example_input(model: nn.Module, input_shape: Sequence[int], batch_size: int = 1) -> torch.Tensor:
    shape = sample_shape(model, input_shape)
    device, dtype = model_device_dtype(model)
    return torch.randn((batch_size, *shape), device=device, dtype=dtype)


def export_model(
    model: nn.Module,
    path: str | os.PathLike,
    format: str,
    input_shape: Sequence[int],
    opset: int = 17,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write ``model`` in eval mode to ``path`` in ``format``; its modes are restored after.

    Args:
        model: the network to export.
        path: destination file; its folder is created. Nothing is left there on failure.
        format: a key of :data:`EXPORT_FORMATS` (``"onnx"``, ``"torchscript"``).
        input_shape: one sample, e.g. ``(3, 32, 32)``; ONNX keeps the batch dim dynamic.
        opset: ONNX opset version.
        metadata: string pairs stored in the file (ONNX ``metadata_props``, a TorchScript
            extra file), such as :func:`export_metadata` builds from a checkpoint.

    Returns:
        The path written.

    Raises:
        ConfigError: unknown format, bad input_shape, or the ``onnx`` package is missing.
    """
    if format not in EXPORT_FORMATS:
        raise unknown_choice("export format", format, EXPORT_FORMATS)
    exporter = EXPORT_FORMATS[format]
    x = _example_input(model, input_shape)
    with eval_mode(model):
        return atomic_write(path, lambda tmp: exporter(model, x, tmp, opset, dict(metadata or {})))


def export_metadata(header: dict[str, Any], input_shape: Sequence[int]) -> dict[str, str]:
    """What whoever deploys an exported model must know, from a checkpoint's header.

    Values are strings (ONNX metadata is string pairs); lists and dicts are JSON.
    ``normalisation`` says how to turn pixels into the model's input; ``class_names``
    and ``pruning`` appear only when the checkpoint records them.
    """
    meta = header.get("meta", {})
    dataset = meta.get("dataset", {})
    out = {
        "secateurs_version": __version__,
        "input_shape": json.dumps(list(input_shape)),
        "input_layout": "NCHW, batch dimension dynamic",
        "output": "logits",
    }
    norm = meta.get("normalisation")
    if norm:
        out.update(
            mean=json.dumps(norm["mean"]),
            std=json.dumps(norm["std"]),
            normalisation="input = (pixel / 255 - mean) / std, per channel",
        )
    names = meta.get("class_names", dataset.get("class_names"))
    if names:
        out["class_names"] = json.dumps(list(names))
    for key in ("name", "num_classes"):
        if key in dataset:
            out[f"dataset_{key}"] = str(dataset[key])
    if meta.get("pruning"):
        out["pruning"] = json.dumps(meta["pruning"], sort_keys=True)
    if meta.get("metrics", {}).get("test_top1") is not None:
        out["test_top1"] = f"{meta['metrics']['test_top1']:.2f}"
    return out


def verify_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    input_shape: Sequence[int],
    atol: float = 1e-4,
    batch_size: int = 1,
    rtol: float = 1e-4,
) -> float:
    """Run the ONNX file in onnxruntime on a random batch and compare with PyTorch.

    Args:
        model: the PyTorch model the file was exported from; run in eval mode, then restored.
        path: the ``.onnx`` file.
        input_shape: one sample, e.g. ``(3, 32, 32)``.
        atol: acceptable absolute difference, plus ``rtol`` times the largest output
            magnitude: float32 kernels in two runtimes sum in different orders, so deep
            untrained nets with logits in the thousands differ by more than a fixed atol.
        rtol: see ``atol``.
        batch_size: rows of the random batch; anything but 1 also checks the dynamic batch.

    Returns:
        The max absolute difference between the two outputs.

    Raises:
        SecateursError: the difference exceeds the tolerance, or the output shapes differ.
        ConfigError: ``onnxruntime`` is not installed.
    """
    ort = _require("onnxruntime")
    x = _example_input(model, input_shape, batch_size)
    with eval_mode(model), torch.inference_mode():
        expected = model(x).detach().float().cpu().numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"input": x.cpu().numpy()})
    if got.shape != expected.shape:
        raise SecateursError(
            f"ONNX output of {path} has shape {got.shape}, PyTorch gives {expected.shape}; re-export the model"
        )
    diff = float(abs(got.astype("float32") - expected).max()) if got.size else 0.0
    scale = float(abs(expected).max()) if expected.size else 0.0
    if diff > atol + rtol * scale:
        raise SecateursError(
            f"ONNX output of {path} differs from PyTorch by {diff:.3g} > atol={atol:g} + rtol={rtol:g} x "
            f"max|output|={scale:.3g}; re-export, or raise the tolerance if the model runs in reduced precision"
        )
    return diff
