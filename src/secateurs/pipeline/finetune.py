"""Fine-tuning after each pruning round, on the foundation's trainer (so DDP, progress,
atomic checkpoints and resume come with it). Modes are registered by name:

* ``tft``: plain cross-entropy;
* ``kd``: cross-entropy plus distillation from the frozen unpruned network;
* ``mlft``: deep mutual learning (Yang & Xiao, Appl. Intell. 2022; docs/methods.md): the
  pruned network and a peer are trained together, each on cross-entropy plus the KL
  divergence towards the other's prediction;
* ``none``: no training.

The distillation term is ``weight * T^2 * KL(p_other/T || p_self/T)``; ``T^2`` keeps its
gradient on the scale of the cross-entropy's whatever the temperature.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._types import build_options
from ..data import ImageDataset
from ..errors import ConfigError, unknown_choice
from ..train import TrainConfig, train
from ..train.trainer import Objective, TrainResult, cross_entropy

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
class NoFinetuneOptions:
    """The mode has no options of its own."""


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
    #: from a forward pass without gradients. An unpruned peer's backward pass is the largest
    #: part of mlft's cost (about 2.5-2.8x tft per step with ``peer_every=1``, the paper's
    #: setting, in benchmarks/results/finetune_modes_quick.md); a larger value moves the
    #: cost towards kd's while the peer still adapts.
    peer_every: int = 1

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


@dataclass(frozen=True)
class FinetuneMode:
    name: str
    summary: str
    #: (pruned model, unpruned reference or None, train config, options) -> what to train.
    build: Callable[[nn.Module, nn.Module | None, TrainConfig, Any], Built]
    options: type = NoFinetuneOptions
    #: The objective reads the unpruned network: the pipeline keeps a copy of it (never the caller's).
    needs_reference: bool = False

    def make_options(self, values: dict[str, Any] | None = None) -> Any:
        return build_options(self.options, values, f"fine-tuning mode {self.name!r}")


FINETUNE_MODES: dict[str, FinetuneMode] = {}


def register_finetune(mode: FinetuneMode) -> FinetuneMode:
    if mode.name in FINETUNE_MODES:
        raise ValueError(f"fine-tuning mode {mode.name!r} is registered twice")
    FINETUNE_MODES[mode.name] = mode
    return mode


def get_finetune_mode(name: str) -> FinetuneMode:
    if name not in FINETUNE_MODES:
        raise unknown_choice("finetune mode", name, FINETUNE_MODES)
    return FINETUNE_MODES[name]


def _kd(model: nn.Module, reference: nn.Module | None, config: TrainConfig, o: DistillOptions) -> Built:
    teacher = copy.deepcopy(reference).eval().requires_grad_(False)

    def objective(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if next(teacher.parameters()).device != x.device:  # the trainer moves only what it trains
            teacher.to(x.device)
        with torch.no_grad():
            target = teacher(x)
        logits = net(x)
        return mutual_loss(logits, target, y, o.temperature, o.weight, config.label_smoothing), logits

    return objective, {}


def _perturbed_copy(model: nn.Module, noise: float, seed: int) -> nn.Module:
    peer = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in peer.parameters():
            if noise and p.numel() > 1:
                p.add_(torch.randn(p.shape, generator=g).to(p) * (noise * float(p.std())))
    return peer


#: The peer's step counter, a buffer of the peer, so that it is saved with the run's state
#: and a resumed run takes the peer's steps where the uninterrupted one would.
PEER_STEP = "mlft_step"


def _mlft(model: nn.Module, reference: nn.Module | None, config: TrainConfig, o: MutualOptions) -> Built:
    peer = copy.deepcopy(reference) if o.peer == "unpruned" else _perturbed_copy(model, o.peer_noise, config.seed)
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
        with torch.set_grad_enabled(learns):
            theirs = peer(x)
        # Each term's gradient reaches only its own peer: the other's logits are detached.
        loss = mutual_loss(mine, theirs, y, o.temperature, o.weight, config.label_smoothing)
        if learns:
            loss = loss + mutual_loss(theirs, mine, y, o.temperature, o.weight, config.label_smoothing)
        return loss, mine

    return objective, {"peer": peer}


register_finetune(
    FinetuneMode(
        "tft", "cross-entropy", lambda model, reference, config, o: (cross_entropy(config.label_smoothing), {})
    )
)
register_finetune(
    FinetuneMode(
        "kd", "cross-entropy + distillation from the frozen unpruned network", _kd, DistillOptions, needs_reference=True
    )
)
register_finetune(
    FinetuneMode(
        "mlft",
        "mutual learning: the pruned network and a peer trained together, each on cross-entropy + KL towards the other",
        _mlft,
        MutualOptions,
        needs_reference=True,
    )
)
register_finetune(FinetuneMode("none", "no fine-tuning", lambda model, reference, config, o: (None, {})))


@dataclass(frozen=True)
class Finetuning:
    """A fine-tuning mode with its options object, resolved once for a run."""

    mode: FinetuneMode
    options: Any

    @classmethod
    def of(cls, name: str, values: dict[str, Any] | None = None) -> Finetuning:
        mode = get_finetune_mode(name)
        return cls(mode, mode.make_options(values))

    @property
    def name(self) -> str:
        return self.mode.name

    @property
    def needs_reference(self) -> bool:
        return self.mode.needs_reference

    def run(
        self,
        model: nn.Module,
        reference: nn.Module | None,
        train_set: ImageDataset,
        test_set: ImageDataset | None,
        config: TrainConfig,
        run_dir: Path | None = None,
        meta: dict[str, Any] | None = None,
        resume: bool = False,
    ) -> TrainResult | None:
        """Fine-tune ``model`` in place; ``None`` when the mode trains nothing.

        ``reference`` (the unpruned network) is read, never changed: a mode that trains or
        freezes it works on its own copy.
        """
        if self.mode.needs_reference and reference is None:
            raise ConfigError(f"fine-tuning mode {self.name!r} reads the unpruned network: pass it as reference")
        objective, companions = self.mode.build(model, reference, config, self.options)
        if objective is None:
            return None
        return train(
            model,
            train_set,
            test_set,
            config,
            run_dir=run_dir,
            resume=resume,
            objective=objective,
            meta=meta,
            companions=companions,
        )


def finetune(
    model: nn.Module,
    mode: str,
    reference: nn.Module | None,
    train_set: ImageDataset,
    test_set: ImageDataset | None,
    config: TrainConfig,
    run_dir: Path | None = None,
    options: dict[str, Any] | None = None,
) -> TrainResult | None:
    """Fine-tune ``model`` in place with the mode named ``mode`` and its ``options``; see
    :meth:`Finetuning.run` (a pruning run resolves its :class:`Finetuning` once instead)."""
    return Finetuning.of(mode, options).run(model, reference, train_set, test_set, config, run_dir)
