"""The pruning pipeline: a configuration resolved once into a :class:`RunPlan`, then the loop
(:mod:`.run`) in which each round the method cuts (:mod:`secateurs.methods`, selecting with
:mod:`secateurs.select`), BN statistics are recalibrated and the trainer fine-tunes.

Modules: ``config`` (the options), ``plan`` (what they resolve to), ``run`` (the loop),
``_state`` (what the loop carries), ``progress`` (resume), ``result`` (the records),
``finetune`` (fine-tuning modes), ``recalibration`` (BN recalibration), ``recipe`` (YAML
recipes), ``_data`` (what the run reads of its data). The ``secateurs prune`` command is
:mod:`secateurs.commands.prune_run`.
"""

from .config import PruneConfig
from .finetune import FINETUNE_MODES, FinetuneMode, Finetuning, distillation, mutual_loss, register_finetune
from .plan import RunPlan
from .recipe import load_recipe, read_recipe
from .result import PruneResult, RoundRecord
from .run import prune

__all__ = [
    "FINETUNE_MODES",
    "FinetuneMode",
    "Finetuning",
    "PruneConfig",
    "PruneResult",
    "RoundRecord",
    "RunPlan",
    "distillation",
    "load_recipe",
    "mutual_loss",
    "prune",
    "read_recipe",
    "register_finetune",
]
