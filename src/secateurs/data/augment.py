"""Random crop with zero padding plus horizontal flip, for a whole batch in one gather.

The per-sample parameters are a pure function of ``(seed, epoch, sample index)``: they are
drawn for every sample of the dataset at once, so a sample is augmented identically
whichever rank, batch size or step it lands in. That is what makes a resumed or a
multi-process run see exactly the images a single-process run would.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit generator seed for ``(seed, epoch)``, the same in every process and Python run.

    A hash rather than ``seed + epoch`` so neighbouring seeds do not replay shifted epochs
    (seed 0 epoch 1 would equal seed 1 epoch 0).
    """
    digest = hashlib.sha256(f"secateurs-augment:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass(frozen=True)
class CropFlipParams:
    """Crop offsets into the padded image and flip flags, one entry per dataset sample."""

    top: torch.Tensor  # int64 [N], in [0, 2 * padding]
    left: torch.Tensor  # int64 [N]
    flip: torch.Tensor  # bool [N]

    def to(self, device: torch.device) -> CropFlipParams:
        return CropFlipParams(*(t.to(device, non_blocking=True) for t in (self.top, self.left, self.flip)))


def draw_crop_flip(num_samples: int, padding: int, hflip: bool, seed: int, epoch: int) -> CropFlipParams:
    """Draw the parameters of every sample for one epoch from a CPU generator (device-independent)."""
    g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    top = torch.randint(0, 2 * padding + 1, (num_samples,), generator=g)
    left = torch.randint(0, 2 * padding + 1, (num_samples,), generator=g)
    # Drawn even without hflip so the crop offsets do not depend on that option.
    flip = torch.randint(0, 2, (num_samples,), generator=g).bool()
    return CropFlipParams(top, left, flip & hflip)


def pad_images(images: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad uint8 ``[N, C, H, W]`` by ``padding`` on each side (done once per loader, not per batch)."""
    n, c, h, w = images.shape
    out = torch.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=images.dtype, device=images.device)
    out[:, :, padding : padding + h, padding : padding + w] = images
    return out


def crop_flip(padded: torch.Tensor, index: torch.Tensor, params: CropFlipParams, size: int) -> torch.Tensor:
    """Crop ``size x size`` windows from ``padded[index]`` and mirror the flagged ones, in one gather.

    Equivalent to, per sample ``i``: ``padded[i, :, t:t+size, l:l+size]``, then
    ``.flip(-1)`` if flagged. Builds the flat source offset of every output pixel and reads
    them with a single :func:`torch.take`, so no intermediate batch is materialised.

    Args:
        padded: uint8 ``[N, C, H + 2p, W + 2p]``, contiguous.
        index: int64 ``[B]`` dataset indices.
        params: parameters for the whole dataset; looked up at ``index``.
        size: side of the output crops.
    """
    _, c, hp, wp = padded.shape
    ar = torch.arange(size, device=padded.device)
    top, left, flip = params.top[index], params.left[index], params.flip[index]
    base = index * (c * hp * wp) + top * wp + left  # [B]
    cols = torch.where(flip[:, None], size - 1 - ar, ar)  # [B, S]: mirrored column order
    plane = torch.arange(c, device=padded.device) * (hp * wp)  # [C]
    flat = base[:, None, None, None] + plane[None, :, None, None] + (ar * wp)[None, None, :, None]
    return torch.take(padded, flat + cols[:, None, None, :])
