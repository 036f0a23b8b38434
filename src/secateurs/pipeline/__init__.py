"""The pruning pipeline: methods plug in a scoring; the pipeline solves the budget, cuts
with the engine and fine-tunes with the trainer, round after round."""

from .budget import CostModel, Plan, floors_for, solve
from .config import PruneConfig
from .finetune import FINETUNE_MODES, FinetuneMode, distillation, mutual_loss, register_finetune
from .recipe import load_recipe, read_recipe
from .result import PruneResult, RoundRecord
from .run import prune
from .scores import unit_scores

__all__ = [
    "CostModel",
    "FINETUNE_MODES",
    "FinetuneMode",
    "Plan",
    "PruneConfig",
    "PruneResult",
    "RoundRecord",
    "distillation",
    "floors_for",
    "load_recipe",
    "mutual_loss",
    "prune",
    "read_recipe",
    "register_finetune",
    "solve",
    "unit_scores",
]
