"""``secateurs export``: a checkpoint as an ONNX or TorchScript file, checked against PyTorch."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._args import FROM_HELP, add_arch_args, add_input_shape_arg, add_overwrite_arg, arch_spec, one_of
from ._checkpoint import input_shape as shape_of
from ._command import Command


def export_checkpoint(
    ckpt: Path,
    fmt: str,
    out: Path,
    input_shape: Sequence[int] | None = None,
    opset: int = 17,
    verify: bool = True,
    overwrite: bool = False,
    arch: Any = None,
) -> tuple[Path, float | None]:
    """Export, and for ONNX compare with PyTorch in onnxruntime before ``out`` is written.

    ``out`` is claimed first (see :mod:`secateurs.io.outdir`): an existing file is replaced
    only with ``overwrite``, and never the checkpoint being exported. The checkpoint's
    normalisation, input shape, class names and pruning summary go into the file's metadata.
    """
    from .._atomic import atomic_write
    from ..io import read_header
    from ..io._factory import load_model
    from ..io.export import export_metadata, export_model, verify_onnx
    from ..io.outdir import claim

    claim([out], overwrite=overwrite, source=ckpt)
    model = load_model(ckpt, arch)
    shape = shape_of(ckpt, input_shape)
    metadata = export_metadata(read_header(ckpt), shape)
    diff: list[float] = []

    def write(tmp: Path) -> None:
        export_model(model, tmp, fmt, shape, opset=opset, metadata=metadata)
        if verify and fmt == "onnx":
            diff.append(verify_onnx(model, tmp, shape))

    path = atomic_write(out, write)
    return path, (diff[0] if diff else None)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..io.export import EXPORT_FORMATS

    p.add_argument("--from", dest="ckpt", required=True, type=Path, help=FROM_HELP)
    p.add_argument("--format", required=True, help="file format, " + one_of(EXPORT_FORMATS))
    add_arch_args(p)
    p.add_argument("--out", required=True, type=Path, help="the file to write (an existing one only with --overwrite)")
    add_overwrite_arg(p, "the --out file if it exists")
    add_input_shape_arg(p)
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version (onnx only)")
    p.add_argument(
        "--no-verify", action="store_true", help="skip comparing the ONNX model's output with PyTorch's in onnxruntime"
    )


def run(args: argparse.Namespace) -> None:
    path, diff = export_checkpoint(
        args.ckpt,
        args.format,
        args.out,
        args.input_shape,
        args.opset,
        verify=not args.no_verify,
        overwrite=args.overwrite,
        arch=arch_spec(args),
    )
    extra = f" (onnxruntime max abs diff vs PyTorch {diff:.2e})" if diff is not None else ""
    print(f"wrote {path}{extra}")


COMMAND = Command(
    "export",
    "export a checkpoint to ONNX or TorchScript",
    add_arguments,
    run,
    examples="""examples:
  secateurs export --from runs/r20-pruned --format onnx --out r20.onnx
  secateurs export --from runs/r20 --format torchscript --out r20.pt --overwrite""",
)
