"""The run's plan is resolved once, the loop reads it, a round keeps one shape through
resume, and the pipeline and methods packages keep to their size limits and import
direction."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import torch

import secateurs
from secateurs.errors import ConfigError
from secateurs.methods import Method, RoundOutcome
from secateurs.pipeline import FinetuneMode, PruneConfig, RoundRecord, RunPlan
from secateurs.pipeline import plan as plan_module
from secateurs.pipeline.plan import PRUNE_RESUME_FREE, resume_conflicts
from secateurs.pipeline.progress import Progress

PACKAGE = Path(secateurs.__file__).parent
SHAPE = (3, 32, 32)


def _model():
    torch.manual_seed(0)
    return secateurs.create_model("test_resnet", num_classes=4, in_channels=3)


def test_a_prune_run_resolves_its_plan_once(monkeypatch):
    """One get_method, one options object per registry, one schedule for a whole three-round run."""
    calls = {"get_method": 0, "make_options": 0, "round_schedule": 0, "finetune options": 0}
    real_get, real_make, real_schedule = plan_module.get_method, Method.make_options, Method.round_schedule

    def counted(name, real):
        def fn(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        return fn

    monkeypatch.setattr(plan_module, "get_method", counted("get_method", real_get))
    monkeypatch.setattr(Method, "make_options", counted("make_options", real_make))
    monkeypatch.setattr(Method, "round_schedule", counted("round_schedule", real_schedule))
    monkeypatch.setattr(FinetuneMode, "make_options", counted("finetune options", FinetuneMode.make_options))
    _, result = secateurs.prune(
        _model(), "l1-capped", macs_reduction=0.4, rounds=3, finetune="none", input_shape=SHAPE, latency=False
    )
    assert len(result.rounds) == 3
    assert calls == {"get_method": 1, "make_options": 1, "round_schedule": 1, "finetune options": 1}


def test_the_plan_holds_what_the_config_decides():
    config = PruneConfig(method="l1", macs_reduction=0.5, rounds=2, finetune_epochs=3, device="cpu")
    plan = config.plan
    assert isinstance(plan, RunPlan) and plan.config is config
    assert [(r.share, r.epochs) for r in plan.rounds] == [(0.5, 1), (1.0, 2)]
    assert [r.train.epochs for r in plan.rounds] == [1, 2] and plan.rounds[0].train.device == "cpu"
    assert plan.finetuning.name == "tft" and plan.goal(1) == pytest.approx(0.25)
    assert plan.device == torch.device("cpu") and plan.target_on == "macs"
    assert plan.to_dict()["epochs_per_round"] == [1, 2] and plan.to_dict()["finetune_train"]["epochs"] == 2


def test_hnsi_plans_on_kernel_sparse_macs():
    plan = PruneConfig(method="hnsi", macs_reduction=0.5, finetune="none").plan
    assert plan.target_on == "sparse_macs" and len(plan.rounds) == 2


def test_a_config_is_frozen_with_its_plan():
    config = PruneConfig(method="l1", macs_reduction=0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.rounds = 4
    assert dataclasses.replace(config, rounds=4).plan.rounds[-1].share == 1.0
    assert len(dataclasses.replace(config, rounds=4).plan.rounds) == 4


def test_a_bad_device_is_refused_when_the_config_is_built():
    with pytest.raises(ConfigError, match="'gpu'"):
        PruneConfig(method="l1", macs_reduction=0.5, device="gpu")


def test_resume_conflicts_ignores_the_free_options_only():
    saved = PruneConfig(method="l1", macs_reduction=0.5).to_dict()
    free = {k: "x" for k in PRUNE_RESUME_FREE}
    assert resume_conflicts(saved, {**saved, **free}) == {}
    assert resume_conflicts(saved, {**saved, "macs_reduction": 0.4}) == {"macs_reduction": (0.5, 0.4)}
    # Only the options given are compared when keys are named (the CLI's --resume flags).
    assert resume_conflicts(saved, {"seed": 0}, keys=["seed"]) == {}
    assert resume_conflicts(saved, {"seed": 1}, keys=["seed"]) == {"seed": (0, 1)}


def _record(**extra) -> RoundRecord:
    outcome = RoundOutcome(3, "short", {"tau": 0.9})
    recal = {"top1_after_cut": 10.0, "top1_after_recalibration": 20.0, "recalibration_s": 0.5, **extra}
    return RoundRecord.after_cut(2, 0.25, 0.26, 20.0, outcome, (1.0, 2.0), recal)


def test_a_round_record_round_trips_through_the_progress_header():
    done, cut = _record(recalibration_batches=4), _record()
    done.top1_after_finetune, done.finetune_epochs = 30.0, 2
    progress = Progress(round=2, stage="cut", records=[done], cut=cut, notes=["n"])
    back = Progress.from_meta({k: v for k, v in progress.to_meta({})["prune_progress"].items() if k != "config"})
    assert back == progress and back.resumed_cut(2) == cut and back.resumed_cut(3) is None


def test_a_cut_saved_by_the_earlier_layout_resumes_as_a_record():
    old = {
        "removed": 3,
        "achieved": 0.26,
        "note": "short",
        "details": {"tau": 0.9},
        "top1": 20.0,
        "recalibration": {"top1_after_cut": 10.0, "top1_after_recalibration": 20.0, "recalibration_s": 0.5},
        "scoring_s": 1.0,
        "surgery_s": 2.0,
        "goal": 0.25,
    }
    back = Progress.from_meta({"round": 2, "stage": "cut", "cut": old})
    assert back.cut == _record()


# --- layout ---------------------------------------------------------------------------------

#: The public ``secateurs.prune`` keeps its documented keywords.
EXEMPT = {("pipeline/run.py", "prune")}


def _functions(folder: str):
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path, node


@pytest.mark.parametrize("folder", ["pipeline", "methods"])
def test_modules_and_functions_stay_small(folder):
    big = [p.name for p in (PACKAGE / folder).rglob("*.py") if len(p.read_text().splitlines()) > 300]
    assert not big
    for path, node in _functions(folder):
        if (str(path.relative_to(PACKAGE)), node.name) in EXEMPT:
            continue
        a = node.args
        params = [*a.posonlyargs, *a.args, *a.kwonlyargs]
        count = len(params) + (a.vararg is not None) + (a.kwarg is not None)
        count -= bool(params) and params[0].arg in ("self", "cls")
        assert node.end_lineno - node.lineno + 1 <= 60, f"{path.name}:{node.lineno} {node.name}"
        assert count <= 8, f"{path.name}:{node.lineno} {node.name}: {count} parameters"


@pytest.mark.parametrize("folder, above", [("select", ("methods", "pipeline")), ("methods", ("pipeline",))])
def test_imports_run_downward(folder, above):
    for path in (PACKAGE / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module:
                assert node.module.split(".")[0] not in above, f"{path.name} imports {node.module}"
