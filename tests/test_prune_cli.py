"""``secateurs prune`` and ``secateurs methods`` end to end: a trained checkpoint in, a run
directory out, read back with ``eval`` and ``measure``."""

from __future__ import annotations

import json

import pytest
import torch
from _commands import DATA, FAST, prune_argv

from secateurs.cli import main
from secateurs.io import load, read_meta
from secateurs.measure import count_macs, count_params
from secateurs.methods import METHODS, list_methods

pytestmark = pytest.mark.usefixtures("one_thread")

RUN_FILES = {"model.safetensors", "config.json", "metrics.json", "log.txt"}


@pytest.fixture(scope="module")
def pruned(trained_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("prune-cli") / "pruned"
    assert main(prune_argv(trained_checkpoint, out, "--finetune-epochs", "1", *FAST, method="l1-capped", macs=0.5)) == 0
    return out


def _json(path):
    return json.loads(path.read_text())


def _on_target(m) -> None:
    """The target is met; more than a point over it (one channel of this tiny model can cost
    that much) is flagged and explained in the report."""
    assert m["target"] <= m["achieved"] < m["target"] + 0.1
    assert m["within_tolerance"] == (abs(m["achieved"] - m["target"]) <= 0.01)
    if not m["within_tolerance"]:
        assert any(f"{100 * m['achieved']:.2f}%" in note for note in m["notes"])


def test_the_run_directory(pruned, trained_checkpoint):
    assert RUN_FILES <= {p.name for p in pruned.iterdir()}
    # l1-capped: three rounds, the one fine-tuning epoch goes to the last
    assert (pruned / "finetune-3").is_dir() and not (pruned / "finetune-1").exists()
    config = _json(pruned / "config.json")
    assert config["prune"]["method"] == "l1-capped" and config["prune"]["macs_reduction"] == 0.5
    assert config["rounds"] == 3 and config["epochs_per_round"] == [0, 0, 1]
    assert config["method_options"] == {
        "alpha": 0.5,
        "q": 0.5,
        "final_share": 1.0,
        "front_load": 2.0,
        "scale": "current",
        "allocation": "rounds",
    }
    assert config["dataset"] == "synthetic" and config["dataset_options"] == {"num_samples": 128}
    assert config["checkpoint"] == str(trained_checkpoint)
    log = (pruned / "log.txt").read_text()
    assert "round 1/3" in log and "round 3/3" in log


def test_metrics_json(pruned, trained_checkpoint):
    m = _json(pruned / "metrics.json")
    assert m["method"] == "l1-capped" and m["metric"] == "macs" and m["target"] == 0.5
    for side in ("before", "after"):
        assert set(m[side]) >= {"top1", "params", "macs"} and 0 <= m[side]["top1"] <= 100
    original = load(trained_checkpoint)
    assert m["before"]["macs"] == count_macs(original, (3, 32, 32))
    assert m["before"]["params"] == count_params(original)
    assert m["achieved"] == pytest.approx(1 - m["after"]["macs"] / m["before"]["macs"])
    assert abs(m["achieved"] - 0.5) <= 0.01 and m["within_tolerance"] is True
    assert set(m["channels_before"]) == set(m["channels_after"])
    assert sum(m["channels_after"].values()) < sum(m["channels_before"].values())
    assert set(m["timing_s"]) == {"scoring", "surgery", "finetune", "total"}
    assert [r["finetune_epochs"] for r in m["rounds"]] == [0, 0, 1]


def test_the_pruned_checkpoint(pruned, trained_checkpoint):
    model = load(pruned / "model.safetensors")
    m = _json(pruned / "metrics.json")
    assert count_macs(model, (3, 32, 32)) == m["after"]["macs"]
    assert count_params(model) == m["after"]["params"]
    widths = {
        name: mod.out_channels if hasattr(mod, "out_channels") else mod.out_features
        for name, mod in model.named_modules()
        if hasattr(mod, "out_channels") or hasattr(mod, "out_features")
    }
    assert widths == m["channels_after"]
    meta = read_meta(pruned / "model.safetensors")
    assert meta["pruning"]["method"] == "l1-capped" and meta["pruning"]["source"] == str(trained_checkpoint)
    assert meta["dataset"] == read_meta(trained_checkpoint)["dataset"]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_eval_and_measure_read_the_pruned_checkpoint(pruned, capsys):
    ckpt = str(pruned / "model.safetensors")
    m = _json(pruned / "metrics.json")
    capsys.readouterr()
    assert main(["eval", "--from", ckpt, *DATA, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dataset"] == "synthetic" and result["samples"] == 128
    assert result["top1"] == pytest.approx(m["after"]["top1"])
    assert main(["measure", "--from", ckpt, "--no-latency", "--json"]) == 0
    measured = json.loads(capsys.readouterr().out)
    assert measured["macs"] == m["after"]["macs"] and measured["params"] == m["after"]["params"]


def _no_finetuning(trained_checkpoint, out):
    """A valid l1 prune without fine-tuning: what the refusals below refuse for its ``out`` alone."""
    return prune_argv(trained_checkpoint, out, "--finetune-epochs", "0", *FAST, method="l1", macs=0.3)


def test_a_second_prune_into_the_same_run_is_refused(pruned, trained_checkpoint, capsys):
    files = {p.name: p.read_bytes() for p in pruned.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(_no_finetuning(trained_checkpoint, pruned)) == 2
    err = capsys.readouterr().err
    assert "already holds (part of) a pruning run" in err and err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in pruned.iterdir() if p.is_file()} == files


# --- recipes ------------------------------------------------------------------------------


def _recipe(tmp_path, text: str):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


def test_a_recipe_runs(trained_checkpoint, tmp_path):
    recipe = _recipe(
        tmp_path,
        "method: l1\nmacs_reduction: 0.4\nfinetune_epochs: 1\n"
        "finetune_train: {batch_size: 64, max_steps_per_epoch: 1, progress: false}\n",
    )
    out = tmp_path / "run"
    assert main(prune_argv(trained_checkpoint, out, "--recipe", recipe, "--no-latency", *DATA)) == 0
    config = _json(out / "config.json")
    assert config["prune"]["method"] == "l1" and config["prune"]["macs_reduction"] == 0.4
    assert config["prune"]["finetune_epochs"] == 1 and config["epochs_per_round"] == [1]
    assert config["prune"]["finetune_train"]["max_steps_per_epoch"] == 1
    m = _json(out / "metrics.json")
    assert m["target"] == 0.4 and m["metric"] == "macs"
    _on_target(m)
    assert count_macs(load(out / "model.safetensors"), (3, 32, 32)) == m["after"]["macs"]


def test_flags_override_the_recipe(trained_checkpoint, tmp_path):
    recipe = _recipe(
        tmp_path, "method: l1\nmacs_reduction: 0.5\nfinetune_epochs: 3\nfinetune_train: {batch_size: 64, lr: 0.02}\n"
    )
    out = tmp_path / "run"
    flags = [
        "--method",
        "l2",
        "--params-reduction",
        "0.3",
        "--finetune-epochs",
        "0",
        "--finetune-max-steps-per-epoch",
        "1",
    ]
    assert main(prune_argv(trained_checkpoint, out, "--recipe", recipe, *flags, "--no-latency", *DATA)) == 0
    config = _json(out / "config.json")["prune"]
    assert config["method"] == "l2"
    assert config["params_reduction"] == 0.3 and config["macs_reduction"] is None  # a flag target replaces the recipe's
    assert config["finetune_epochs"] == 0
    assert config["finetune_train"] == {"batch_size": 64, "lr": 0.02, "max_steps_per_epoch": 1}  # merged
    m = _json(out / "metrics.json")
    assert m["method"] == "l2" and m["metric"] == "params" and m["target"] == 0.3
    _on_target(m)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("method: l1\nmacs_reducton: 0.5\n", "macs_reducton"),
        ("- l1\n- 0.5\n", "mapping"),
        ("just text\n", "mapping"),
        ("method: l1\nmacs_reduction: 0.5\nfinetune_train: 64\n", "finetune_train"),
        ("method: l1\nmacs_reduction: [0.5\n", "not valid YAML"),
        ("method: l1-caped\nmacs_reduction: 0.5\n", "'l1-capped'"),
        ("method: l1\nmacs_reduction: 0.5\nmethod_options: {alpha: 0.5}\n", "alpha"),
    ],
)
def test_bad_recipes_are_refused(trained_checkpoint, tmp_path, capsys, text, needle):
    recipe = _recipe(tmp_path, text)
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(prune_argv(trained_checkpoint, out, "--recipe", recipe, *FAST)) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert not out.exists()


def test_a_missing_recipe_is_named(trained_checkpoint, tmp_path, capsys):
    assert main(prune_argv(trained_checkpoint, tmp_path / "run", "--recipe", str(tmp_path / "nope.yaml"))) == 2
    assert "nope.yaml" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--method", "l1-caped", "--macs-reduction", "0.5"], "'l1-capped'"),
        (["--method", "l1"], "exactly one target"),
        (["--method", "l1", "--macs-reduction", "1.5"], "macs_reduction"),
        (["--method", "l1", "--macs-reduction", "0.5", "--finetune", "distil"], "'distil'"),
        (["--method", "l1", "--macs-reduction", "0.5", "--finetune", "kd", "--finetune-option", "T=2"], "temperature"),
        (["--method", "l1", "--macs-reduction", "0.5", "--method-option", "alpha=0.5"], "alpha"),
    ],
)
def test_bad_flags_are_one_clear_line(trained_checkpoint, tmp_path, capsys, argv, needle):
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(prune_argv(trained_checkpoint, out, *argv, *DATA)) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert not out.exists()


# --- methods ------------------------------------------------------------------------------


def test_methods_lists_every_registered_method(capsys):
    capsys.readouterr()
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list_methods()
    for line in lines:
        name = line.split()[0]
        assert METHODS[name].summary in line
    assert {"l1", "l2", "l1-capped", "fpgm", "bn-scale", "feature-l1", "random"} <= set(list_methods())


def test_a_run_dir_with_leftover_finetuning_is_refused(trained_checkpoint, tmp_path, capsys):
    """An interrupted run leaves finetune-<r>/ behind; a new run there would re-cut and then
    collide with it, so it is refused before anything is loaded."""
    out = tmp_path / "interrupted"
    (out / "finetune-1").mkdir(parents=True)
    assert main(_no_finetuning(trained_checkpoint, out)) == 2
    assert "finetune-1" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["finetune-1"]


@pytest.mark.parametrize(
    "key, recipe_value, given, merged",
    [
        ("finetune_options", "{peer: pruned}", {"temperature": 4.0}, {"peer": "pruned", "temperature": 4.0}),
        ("finetune_train", "{batch_size: 64}", {"lr": 0.02}, {"batch_size": 64, "lr": 0.02}),
        ("method_options", "{alpha: 0.5}", {"alpha": 0.7}, {"alpha": 0.7}),
    ],
)
def test_mapping_options_given_on_top_merge_into_the_recipes(tmp_path, key, recipe_value, given, merged):
    """Every mapping option merges key by key, the given value winning a clash; a recipe's
    `peer: pruned` survived a `--finetune-option temperature=4` only once finetune_options was
    merged like the other two."""
    from secateurs.pipeline import load_recipe

    method = "l1-capped" if key == "method_options" else "l1"
    text = f"method: {method}\nmacs_reduction: 0.5\nfinetune: mlft\n{key}: {recipe_value}\n"
    config = load_recipe(_recipe(tmp_path, text), **{key: given})
    assert getattr(config, key) == merged
