"""The pruning run's configuration: one dataclass, validated on construction, that a
recipe file, the CLI flags and the Python keywords all fill in the same way."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError, unknown_choice
from ..select import SCOPES, check_round_to
from ..train import TrainConfig
from .plan import RunPlan

#: Fine-tuning defaults that differ from training from scratch.
FINETUNE_TRAIN_DEFAULTS: dict[str, Any] = {"lr": 0.01, "schedule": "cosine"}


@dataclass(frozen=True)
class PruneConfig:
    """Everything that decides a pruning run's result.

    Exactly one of ``macs_reduction`` and ``params_reduction`` is the target, a fraction
    in (0, 1) of the unpruned model's value (a method with its own threshold, such as
    ``probability``'s ``tau``, may run without one). ``finetune_epochs`` is the total over all
    rounds, so methods with different round counts compare at the same fine-tuning budget:
    split as evenly as possible (later rounds get the remainder), unless the method has a
    schedule of its own (``hnsi``'s stages; ``l1-capped`` keeps most for its last round).

    Frozen: building it resolves its :attr:`plan` once, and a changed option would leave
    the plan behind (``dataclasses.replace`` builds a new one).
    """

    method: str = "l1-capped"
    macs_reduction: float | None = None
    params_reduction: float | None = None
    scope: str = "global"
    rounds: int | None = None  # None: the method's own schedule
    min_keep_fraction: float = 0.1
    #: Every layer the run narrows keeps a width that is a multiple of this (1: any width).
    round_to: int = 1
    #: None: the method's default (tft; none for probability), or tft when finetune_epochs is given.
    finetune: str | None = None
    finetune_epochs: int | None = None  # None: 3 when fine-tuning
    #: The fine-tuning mode's own options, e.g. ``{"temperature": 4.0}`` for kd/mlft.
    finetune_options: dict[str, Any] = field(default_factory=dict)
    #: TrainConfig fields for fine-tuning (``epochs`` is set per round from ``finetune_epochs``).
    finetune_train: dict[str, Any] = field(default_factory=dict)
    method_options: dict[str, Any] = field(default_factory=dict)
    calib_samples: int = 256
    #: Batches of 128 training samples on which every BN's statistics are re-estimated after
    #: each cut (:mod:`.recalibration`). None: the method's default (on, with
    #: ``DEFAULT_BN_RECALIBRATION`` batches, when a training set is given; off for probability);
    #: 0: off.
    bn_recalibration: int | None = None
    seed: int = 0
    device: str = "auto"
    latency: bool = True  # measure latency before and after (the slowest part of a report)
    eval_each_epoch: bool = True  # test accuracy after every fine-tuning epoch, not only at the end
    #: Test accuracy of the unpruned model; off when it is known already (a benchmark that
    #: prunes one checkpoint many times).
    evaluate_before: bool = True

    def __post_init__(self) -> None:
        from .._types import check_field_types

        check_field_types(self, "pruning option")
        object.__setattr__(self, "_plan", RunPlan.resolve(self))

    @property
    def plan(self) -> RunPlan:
        """Everything this configuration decides, resolved once (:class:`.plan.RunPlan`)."""
        if "_plan" not in self.__dict__:  # unpickled: the plan is not pickled with it
            object.__setattr__(self, "_plan", RunPlan.resolve(self))
        return self.__dict__["_plan"]

    def __getstate__(self) -> dict[str, Any]:
        # The plan holds the registry's functions (lambdas among them); it is resolved again.
        return {k: v for k, v in self.__dict__.items() if k != "_plan"}

    def check_target(self, threshold: str | None) -> None:
        """Exactly one reduction target in (0, 1), unless the method runs on its own
        ``threshold`` option instead; a known scope, and no scope without a target."""
        targets = {
            k: v
            for k, v in (("macs_reduction", self.macs_reduction), ("params_reduction", self.params_reduction))
            if v is not None
        }
        if len(targets) > 1 or (not targets and threshold is None):
            raise ConfigError(
                "give exactly one target: macs_reduction or params_reduction (a fraction such as 0.5), "
                f"got {targets or 'neither'}"
            )
        if targets and threshold is not None and self.method_options.get(threshold) is not None:
            raise ConfigError(
                f"give {self.method}'s {threshold} or a reduction target, not both: with a target, "
                f"{threshold} is solved (the record gives it)"
            )
        if not targets and self.scope != "global":
            raise ConfigError(
                f"scope {self.scope!r} needs a reduction target; {self.method} without one removes "
                f"every channel its {threshold} flags"
            )
        for name, value in targets.items():
            if not isinstance(value, (int, float)) or not 0 < value < 1:
                raise ConfigError(f"{name} must be a fraction strictly between 0 and 1, got {value!r}")
        if self.scope not in SCOPES:
            raise unknown_choice("scope", self.scope, SCOPES)

    def check_values(self) -> None:
        """The options every method reads the same way."""
        if self.rounds is not None and (not isinstance(self.rounds, int) or self.rounds < 1):
            raise ConfigError(f"rounds must be a positive integer, got {self.rounds!r}")
        check_round_to(self.round_to)
        if not 0 <= self.min_keep_fraction < 1:
            raise ConfigError(f"min_keep_fraction must be in [0, 1), got {self.min_keep_fraction!r}")
        if self.finetune_epochs is not None and self.finetune_epochs < 0:
            raise ConfigError(f"finetune_epochs must be a non-negative integer, got {self.finetune_epochs!r}")
        if self.finetune == "none" and self.finetune_epochs:
            raise ConfigError(f"finetune 'none' with finetune_epochs={self.finetune_epochs}: drop one of them")
        if self.bn_recalibration is not None and self.bn_recalibration < 0:
            raise ConfigError(
                f"bn_recalibration must be a number of batches >= 0 (0: off), got {self.bn_recalibration!r}"
            )
        if self.calib_samples < 1:
            raise ConfigError(f"calib_samples must be positive, got {self.calib_samples!r}")
        if "epochs" in self.finetune_train:
            raise ConfigError("finetune_train sets epochs through finetune_epochs; remove 'epochs' from it")

    @property
    def metric(self) -> str:
        return "macs" if self.macs_reduction is not None else "params"

    @property
    def target(self) -> float | None:
        """The reduction aimed at; None when the method runs on its own threshold instead."""
        value = self.macs_reduction if self.macs_reduction is not None else self.params_reduction
        return None if value is None else float(value)

    # What the plan resolved, read from it (never derived again).

    def resolved_finetune(self) -> str:
        return self.plan.finetuning.name

    def resolved_bn_recalibration(self, has_train_set: bool) -> int:
        """Batches to recalibrate on after each cut: the explicit value, else the default when
        there is a training set to draw them from and the method does not need to go without."""
        explicit = self.bn_recalibration is not None
        return self.plan.bn_recalibration if has_train_set or explicit else 0

    def resolved_rounds(self) -> int:
        return len(self.plan.rounds)

    def epochs_per_round(self) -> list[int]:
        return self.plan.epochs

    def schedule(self) -> list[tuple[float, int]]:
        """Per round: the share of the target reached by its end, and its fine-tuning epochs."""
        return [(r.share, r.epochs) for r in self.plan.rounds]

    def train_config(self, epochs: int, device: str | None = None) -> TrainConfig:
        """The fine-tuning configuration of a round of ``epochs`` epochs (at least 1) on
        ``device`` (default: the configuration's own, unresolved)."""
        values = {
            **FINETUNE_TRAIN_DEFAULTS,
            "seed": self.seed,
            "device": self.device if device is None else device,
            **self.finetune_train,
            "epochs": max(epochs, 1),
        }
        return TrainConfig.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruneConfig:
        from .._types import from_known_fields

        return from_known_fields(cls, data, "pruning option")
