"""The pruning pipeline: methods plug in a scoring; the pipeline solves the budget, cuts
with the engine and fine-tunes with the trainer, round after round."""
from .budget import CostModel, Plan, floors_for, solve
from .config import FINETUNE_MODES, PruneConfig
from .recipe import load_recipe, read_recipe
from .result import PruneResult, RoundRecord
from .run import prune
from .scores import unit_scores

__all__ = ["CostModel", "FINETUNE_MODES", "Plan", "PruneConfig", "PruneResult", "RoundRecord", "floors_for",
           "load_recipe", "prune", "read_recipe", "solve", "unit_scores"]
