"""One object holding every measurement of a model, for JSON reports and console summaries."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from ._common import sample_shape
from .latency import measure_latency
from .macs import count_macs
from .params import count_params


@dataclass
class Measurement:
    """Size, compute and speed of one model at one input shape.

    Attributes:
        params: all parameters; what physically shrinks under structured pruning.
        nonzero_params: parameters that are not zero; shrinks under masking as well.
        macs: dense multiply-accumulates of one sample.
        sparse_macs: MACs of the non-zero (or unmasked) kernels only.
        input_shape: one sample, without batch dim.
        latency: as returned by :func:`measure_latency`, or None when it was skipped.
    """

    params: int
    nonzero_params: int
    macs: int
    sparse_macs: int
    input_shape: tuple[int, ...]
    latency: dict | None = None

    def to_dict(self) -> dict:
        """JSON-able dict; batch sizes become string keys, as JSON would make them anyway,
        so that ``to_dict()`` equals its own JSON round trip."""
        d = dataclasses.asdict(self)
        d["input_shape"] = list(self.input_shape)
        if self.latency is not None:
            d["latency"] = {**self.latency, "batches": {str(b): dict(t) for b, t in self.latency["batches"].items()}}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Measurement:
        """Inverse of :meth:`to_dict`, for reports that compare saved measurements."""
        latency = d.get("latency")
        if latency is not None:
            latency = {**latency, "batches": {int(b): dict(t) for b, t in latency["batches"].items()}}
        return cls(
            params=int(d["params"]),
            nonzero_params=int(d["nonzero_params"]),
            macs=int(d["macs"]),
            sparse_macs=int(d["sparse_macs"]),
            input_shape=tuple(int(s) for s in d["input_shape"]),
            latency=latency,
        )

    def summary(self) -> str:
        """Human-readable lines: millions of params and MACs, then ms per batch size."""
        lines = [
            f"params   {self.params / 1e6:.3f} M ({self.nonzero_params / 1e6:.3f} M non-zero)",
            f"MACs     {self.macs / 1e6:.2f} M ({self.sparse_macs / 1e6:.2f} M sparse) per sample "
            f"of shape {tuple(self.input_shape)}",
        ]
        if self.latency is None:
            lines.append("latency  not measured")
            return "\n".join(lines)
        for b, t in self.latency["batches"].items():
            lines.append(
                f"latency  batch {b}: {t['median_ms']:.3f} ms median (p10 {t['p10_ms']:.3f}, p90 {t['p90_ms']:.3f})"
            )
        lines.append(
            f"         on {self.latency['device']}, {self.latency['threads']} threads, "
            f"{self.latency['dtype']}, median of {self.latency['repeats']} runs"
        )
        return "\n".join(lines)


def measure(
    model: nn.Module,
    input_shape: Sequence[int],
    latency: bool = True,
    batch_sizes: Sequence[int] = (1, 64),
    warmup: int = 5,
    repeats: int = 30,
    device: str | torch.device | None = None,
    threads: int | None = None,
) -> Measurement:
    """Count params and MACs and (unless ``latency=False``) time the model.

    Args:
        model: the network; its modes, device and torch's thread count are left as found.
        input_shape: one sample, e.g. ``(3, 32, 32)``; a leading batch dim of 1 is accepted.
        latency: time forwards; off for quick checks, since timing dominates the cost.
        batch_sizes, warmup, repeats, device, threads: see :func:`measure_latency`.
    """
    shape = sample_shape(model, input_shape)
    macs = count_macs(model, shape)
    sparse_macs = count_macs(model, shape, sparse=True)
    timing = None
    if latency:
        timing = measure_latency(model, shape, batch_sizes, warmup, repeats, device, threads)
    return Measurement(
        params=count_params(model),
        nonzero_params=count_params(model, nonzero=True),
        macs=macs,
        sparse_macs=sparse_macs,
        input_shape=shape,
        latency=timing,
    )
