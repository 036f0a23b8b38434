"""The distillation objectives of fine-tuning, ``kd`` and ``mlft``, and their options.

The distillation term is ``weight * T^2 * KL(p_other/T || p_self/T)``; ``T^2`` keeps its
gradient on the scale of the cross-entropy's whatever the temperature. ``mlft`` is deep
mutual learning (Zhang, Xiang, Hospedales & Lu, CVPR 2018, doi:10.1109/CVPR.2018.00454),
as Yang & Xiao (Applied Intelligence 2022) use it after pruning (docs/methods.md): the pruned network and
a peer are trained together, each on cross-entropy plus the KL divergence towards the
other's prediction. The modes are registered in :mod:`.finetune`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._copy import copy_model
from ..errors import ConfigError, unknown_choice
from ..train import TrainConfig
from ..train.trainer import Objective

PEERS = ("unpruned", "pruned")


def distillation(logits: torch.Tensor, target_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(target/T) || softmax(logits/T))``, averaged over the batch."""
    t = temperature
    return (
        t
        * t
        * F.kl_div(
            F.log_softmax(logits.float() / t, 1),
            F.log_softmax(target_logits.float() / t, 1),
            reduction="batchmean",
            log_target=True,
        )
    )


def mutual_loss(
    logits: torch.Tensor,
    other_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    weight: float = 1.0,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """One peer's loss: cross-entropy plus ``weight`` times distillation towards the other peer,
    whose prediction is a fixed target (no gradient flows into it)."""
    ce = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
    return ce + weight * distillation(logits, other_logits.detach(), temperature)


@dataclass(frozen=True)
class DistillOptions:
    """``temperature`` T and ``weight`` lambda of the distillation term (kd and mlft)."""

    temperature: float = 1.0
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ConfigError(f"temperature must be a positive finite number, got {self.temperature!r}")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ConfigError(f"weight must be a finite number >= 0, got {self.weight!r}")


@dataclass(frozen=True)
class MutualOptions(DistillOptions):
    """``peer``: ``unpruned`` (a trainable copy of the unpruned network, the default) or
    ``pruned`` (a second copy of the pruned network). Two identical copies trained on the same
    batches get identical gradients and never differ, so the second pruned copy starts from
    the pruned weights plus seeded Gaussian noise of ``peer_noise`` times each tensor's std."""

    peer: str = "unpruned"
    peer_noise: float = 0.01
    #: The peer learns on every ``peer_every``-th step only; on the others its prediction comes
    #: from a forward pass without gradients (or none at all, see ``distil_every_step``).
    #: mlft's extra cost over tft is the peer's own forward and backward pass: the batch is
    #: loaded and augmented once for both networks (0.2% of a step) and one backward pass runs
    #: through the sum of both losses. Measured with an unpruned peer (resnet20, Fashion-MNIST,
    #: l1 50% MACs, batch 128, one thread, interleaved with tft on a busy machine, median of
    #: 5 passes), per step against tft's: the peer's forward + backward 1.4x, its no-grad forward
    #: 0.4-0.5x; mlft 2.3x with ``peer_every=1`` (the paper's setting), 1.9x with 2, 1.75x with 4
    #: (1.66x from the parts; 2.0x in a noisier 3-pass rerun), kd 1.4x. Only below 2x does
    #: mlft's E/2 epochs cost less wall time than tft's E (measured: 0.86x with 4, 1.06x with 1;
    #: benchmarks/results/finetune_modes_mlft_proxy.md), hence 4: the pruned network still
    #: distils from the peer on every step and the peer still learns from it, on a quarter of
    #: the steps.
    peer_every: int = 4
    #: On the steps the peer does not learn: ``True`` distils from its no-grad prediction
    #: (cost 1.4x tft's on those steps); ``False`` trains the pruned network on cross-entropy
    #: alone there and skips the peer (cost 1.0x; 1.3-1.6x tft over a ``peer_every=4`` cycle),
    #: so the mutual term acts on one step in ``peer_every`` only. Not the default: in the
    #: proxy above it gave 91.06% top-1 against 91.15% with distillation on every step.
    distil_every_step: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.peer_every < 1:
            raise ConfigError(f"peer_every must be a positive integer, got {self.peer_every!r}")
        if self.peer not in PEERS:
            raise unknown_choice("mlft peer", self.peer, PEERS)
        if not (math.isfinite(self.peer_noise) and self.peer_noise >= 0):
            raise ConfigError(f"peer_noise must be a finite number >= 0, got {self.peer_noise!r}")


#: What a mode builds for one fine-tuning run: the objective (None: no training) and the
#: companions trained with the model (name -> module; the objective gets them as keywords).
Built = tuple[Objective | None, dict[str, nn.Module]]


def kd_objective(model: nn.Module, reference: nn.Module | None, config: TrainConfig, o: DistillOptions) -> Built:
    teacher = copy_model(reference).eval().requires_grad_(False)

    def objective(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if next(teacher.parameters()).device != x.device:  # the trainer moves only what it trains
            teacher.to(x.device)
        with torch.no_grad():
            target = teacher(x)
        logits = net(x)
        return mutual_loss(logits, target, y, o.temperature, o.weight, config.label_smoothing), logits

    return objective, {}


def _perturbed_copy(model: nn.Module, noise: float, seed: int) -> nn.Module:
    peer = copy_model(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in peer.parameters():
            if noise and p.numel() > 1:
                p.add_(torch.randn(p.shape, generator=g).to(p) * (noise * float(p.std())))
    return peer


#: The peer's step counter, a buffer of the peer, so that it is saved with the run's state
#: and a resumed run takes the peer's steps where the uninterrupted one would.
PEER_STEP = "mlft_step"


def mlft_objective(model: nn.Module, reference: nn.Module | None, config: TrainConfig, o: MutualOptions) -> Built:
    peer = copy_model(reference) if o.peer == "unpruned" else _perturbed_copy(model, o.peer_noise, config.seed)
    peer.requires_grad_(True)
    if o.peer_every > 1:
        peer.register_buffer(PEER_STEP, torch.zeros((), dtype=torch.int64))

    def objective(
        net: nn.Module, x: torch.Tensor, y: torch.Tensor, peer: nn.Module
    ) -> tuple[torch.Tensor, torch.Tensor]:
        learns = True
        if o.peer_every > 1:
            step = getattr(getattr(peer, "module", peer), PEER_STEP)  # under DDP the peer comes wrapped
            learns = int(step) % o.peer_every == 0
            step += 1
        mine = net(x)
        if not learns and not o.distil_every_step:
            return F.cross_entropy(mine, y, label_smoothing=config.label_smoothing), mine
        with torch.set_grad_enabled(learns):
            theirs = peer(x)
        # Each term's gradient reaches only its own peer: the other's logits are detached.
        loss = mutual_loss(mine, theirs, y, o.temperature, o.weight, config.label_smoothing)
        if learns:
            loss = loss + mutual_loss(theirs, mine, y, o.temperature, o.weight, config.label_smoothing)
        return loss, mine

    return objective, {"peer": peer}
