"""Nothing lost, nothing half-written, no traceback: the write-safety rule of
:mod:`secateurs.io.outdir`, OS failures as one-line errors, ``--from`` forms, and the help.

Every refusal is checked by hashing what was on disk before and after, not by trusting the
exit code.
"""

from __future__ import annotations

import argparse
import builtins
import dataclasses
import errno
import hashlib
import io
import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from secateurs.cli import COMMANDS, build_parser, main
from secateurs.io import load

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = ["--dataset", "synthetic", "--dataset-option", "num_samples=64"]
TRAIN = ["train", "--model", "test_resnet", *DATA, "--epochs", "1", "--batch-size", "32", "--no-progress"]
PRUNE = [
    "--method",
    "l1",
    "--macs-reduction",
    "0.3",
    "--finetune",
    "none",
    "--no-latency",
    "--dataset-option",
    "num_samples=64",
]


def snapshot(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` (folders by their files)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("safety") / "run"
    assert main([*TRAIN, "--out", str(out)]) == 0
    return out


@pytest.fixture
def user_dir(tmp_path) -> Path:
    """A folder of a user's: notes, a sub-folder, and a model.safetensors of their own."""
    d = tmp_path / "mine"
    (d / "sub").mkdir(parents=True)
    (d / "notes.txt").write_text("do not lose me")
    (d / "sub" / "data.bin").write_bytes(os.urandom(64))
    (d / "model.safetensors").write_bytes(b"the user's own model " + os.urandom(32))
    return d


# --- the three data-loss cases of the issue --------------------------------------------------


def test_train_into_a_folder_holding_a_model_is_refused(user_dir, capsys):
    before = snapshot(user_dir)
    assert main([*TRAIN, "--out", str(user_dir)]) == 2
    one_line_error(capsys, "model.safetensors", "--overwrite")
    assert snapshot(user_dir) == before


def test_train_overwrite_replaces_only_its_own_files(user_dir, capsys):
    before = snapshot(user_dir)
    assert main([*TRAIN, "--out", str(user_dir), "--overwrite"]) == 0
    after = snapshot(user_dir)
    assert after["model.safetensors"] != before["model.safetensors"]
    load(user_dir / "model.safetensors")  # now a secateurs checkpoint
    assert {k: v for k, v in after.items() if k in before and k != "model.safetensors"} == {
        k: v for k, v in before.items() if k != "model.safetensors"
    }
    assert set(after) - set(before) == {"run.json", "state.safetensors", "metrics.jsonl"}


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
@pytest.mark.parametrize("form", ["file", "run directory"])
def test_export_never_replaces_its_own_checkpoint(run_dir, form, overwrite, capsys):
    before = snapshot(run_dir)
    src = run_dir / "model.safetensors" if form == "file" else run_dir
    argv = ["export", "--from", str(src), "--format", "torchscript", "--out", str(run_dir / "model.safetensors")]
    assert main(argv + overwrite) == 2
    one_line_error(capsys, "destroy its own input")
    assert snapshot(run_dir) == before


def test_prune_into_its_source_run_is_refused(run_dir, capsys):
    before = snapshot(run_dir)
    assert main(["prune", "--from", str(run_dir), "--out", str(run_dir), *PRUNE]) == 2
    one_line_error(capsys, "destroy its own input")
    assert snapshot(run_dir) == before


def test_demo_fresh_keeps_the_users_files(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = [
        "demo",
        "--out",
        str(out),
        "--model",
        "test_resnet",
        *DATA,
        "--epochs",
        "1",
        "--max-steps-per-epoch",
        "1",
        "--finetune-epochs",
        "0",
        "--no-latency",
    ]
    assert main(argv) == 0
    (out / "notes.txt").write_text("mine")
    (out / "sub").mkdir()
    (out / "sub" / "keep.bin").write_bytes(b"\x00\x01")
    capsys.readouterr()
    assert main([*argv, "--fresh"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "sub" / "keep.bin").read_bytes() == b"\x00\x01"


# --- the four traceback cases of the issue -------------------------------------------------


@pytest.fixture
def read_only(tmp_path, monkeypatch) -> Path:
    """A folder on which the OS refuses writes with EROFS, as a read-only mount does.

    chmod 0o500 does that for a normal user; root writes through permissions, so there
    the OS entry points that create files and folders are made to refuse below it.
    """
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "keep.txt").write_text("x")
    ro.chmod(0o500)
    if os.geteuid() == 0:

        def under(path) -> bool:
            return Path(os.path.abspath(os.fspath(path))).is_relative_to(ro)

        def refuse(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

        real_mkdir, real_os_open, real_open = os.mkdir, os.open, builtins.open

        def mkdir(path, mode=0o777, **kw):
            if under(path):
                if os.path.exists(path):  # a real mount also says "exists" first
                    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fspath(path))
                refuse(path)
            return real_mkdir(path, mode, **kw)

        def os_open(path, flags, mode=0o777, **kw):
            if under(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                refuse(path)
            return real_os_open(path, flags, mode, **kw)

        def open_(file, mode="r", *a, **kw):
            if not isinstance(file, int) and under(file) and set(mode) & set("wax+"):
                refuse(file)
            return real_open(file, mode, *a, **kw)

        monkeypatch.setattr(os, "mkdir", mkdir)
        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(builtins, "open", open_)
        monkeypatch.setattr(io, "open", open_)
    yield ro
    ro.chmod(0o700)


@pytest.mark.parametrize("command", ["train", "prune", "export"])
def test_read_only_out_is_one_line(command, run_dir, read_only, capsys):
    before = snapshot(read_only)
    out = read_only / "out"
    argv = {
        "train": [*TRAIN, "--out", str(out)],
        "prune": ["prune", "--from", str(run_dir), "--out", str(out), *PRUNE],
        "export": ["export", "--from", str(run_dir), "--format", "onnx", "--out", str(read_only / "m.onnx")],
    }
    assert main(argv[command]) == 2
    # As root the fixture makes the OS say EROFS; for anyone else chmod 0o500 says EACCES.
    one_line_error(capsys, "read-only file system" if os.geteuid() == 0 else "permission denied", str(read_only))
    assert snapshot(read_only) == before


def test_export_to_a_directory_is_one_line(run_dir, tmp_path, capsys):
    (tmp_path / "d").mkdir()
    assert (
        main(["export", "--from", str(run_dir), "--format", "onnx", "--out", str(tmp_path / "d"), "--overwrite"]) == 2
    )
    one_line_error(capsys, "is a directory", str(tmp_path / "d"))
    assert not any((tmp_path / "d").iterdir())


def test_out_below_a_file_is_one_line(run_dir, capsys):
    before = snapshot(run_dir)
    out = run_dir / "model.safetensors" / "m.onnx"
    assert main(["export", "--from", str(run_dir), "--format", "onnx", "--out", str(out)]) == 2
    one_line_error(capsys, "not a directory", str(out))
    assert snapshot(run_dir) == before


def test_discard_removes_only_the_files_named(tmp_path):
    from secateurs.errors import ConfigError
    from secateurs.io.outdir import discard

    for name in ("a", "b"):
        (tmp_path / name).write_text(name)
    (tmp_path / "d").mkdir()
    assert discard([tmp_path / "a", tmp_path / "missing"]) == [tmp_path / "a"]
    with pytest.raises(ConfigError, match="is a directory"):
        discard([tmp_path / "d"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "d"]


def test_from_a_run_directory_reads_its_model(run_dir, capsys):
    assert main(["eval", "--from", str(run_dir), *DATA, "--json"]) == 0
    by_dir = json.loads(capsys.readouterr().out)
    assert main(["eval", "--from", str(run_dir / "model.safetensors"), *DATA, "--json"]) == 0
    by_file = json.loads(capsys.readouterr().out)
    assert by_dir["top1"] == by_file["top1"] and by_dir["loss"] == by_file["loss"]


def test_from_a_directory_without_a_model_says_so(tmp_path, capsys):
    assert main(["eval", "--from", str(tmp_path), *DATA]) == 2
    one_line_error(capsys, str(tmp_path), "without a model.safetensors")


@pytest.mark.parametrize("kind", ["torch.save", "raw pickle"])
def test_a_pickle_checkpoint_is_named_and_never_loaded(kind, tmp_path, capsys):
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "model.pt"
    if kind == "torch.save":
        torch.save({"w": torch.zeros(2), "evil": Evil()}, path)
    else:
        path.write_bytes(pickle.dumps({"evil": Evil()}, protocol=4))
    assert main(["eval", "--from", str(path), *DATA]) == 2
    one_line_error(capsys, "pickle", "never loads pickles", "Bringing a PyTorch .pt checkpoint")
    assert not marker.exists()


# --- nothing half-written ------------------------------------------------------------------


def test_a_full_disk_mid_checkpoint_leaves_the_previous_one(tmp_path, monkeypatch, capsys):
    """Epoch 1 writes state + model; the disk fills while epoch 2 writes its state."""
    import secateurs.io._safefile as sf

    out, real, calls, saved = tmp_path / "run", sf.save_file, [], {}

    def fills_up(tensors, path, metadata):
        calls.append(path)
        if len(calls) <= 2:
            return real(tensors, path, metadata)
        # What epoch 1 left, just before the failing write (less the temporary file it opened).
        saved.update({k: v for k, v in snapshot(out).items() if not k.endswith(".tmp")})
        with open(path, "wb") as f:
            f.write(b"half of a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(sf, "save_file", fills_up)
    assert main([*TRAIN, "--epochs", "2", "--out", str(out)]) == 2
    one_line_error(capsys, "no space left on device", str(out / "state.safetensors"))
    assert {"model.safetensors", "state.safetensors"} <= set(saved)
    assert snapshot(out) == saved  # byte-identical, and no temporary file left
    monkeypatch.undo()
    assert len(load(out / "model.safetensors").state_dict()) > 0


@pytest.mark.parametrize(
    "code, words",
    [
        (errno.EROFS, "read-only file system"),
        (errno.ENOTDIR, "not a directory"),
        (errno.EISDIR, "is a directory"),
        (errno.ENOSPC, "no space left on device"),
        (errno.EACCES, "permission denied"),
    ],
)
def test_os_errors_at_the_boundary_are_one_line(code, words, monkeypatch, tmp_path, capsys):
    def fail(args):
        raise OSError(code, os.strerror(code), str(tmp_path / "x"))

    monkeypatch.setitem(COMMANDS, "datasets", dataclasses.replace(COMMANDS["datasets"], run=fail))
    assert main(["datasets"]) == 2
    one_line_error(capsys, words, str(tmp_path / "x"))


# --- the sweep: every writing command, an --out of a user's files ------------------------


@pytest.mark.parametrize("command", ["train", "prune", "export-beside", "export-onto", "demo"])
def test_sweep_a_users_folder_is_never_changed(command, run_dir, user_dir, capsys):
    before = snapshot(user_dir)
    argv = {
        "train": [*TRAIN, "--out", str(user_dir)],
        "prune": ["prune", "--from", str(run_dir), "--out", str(user_dir), *PRUNE],
        "export-beside": ["export", "--from", str(run_dir), "--format", "onnx", "--out", str(user_dir / "m.onnx")],
        "export-onto": [
            "export",
            "--from",
            str(run_dir),
            "--format",
            "onnx",
            "--out",
            str(user_dir / "model.safetensors"),
        ],
        "demo": ["demo", "--out", str(user_dir), "--model", "test_resnet", *DATA, "--epochs", "1"],
    }[command]
    code = main(argv)
    if code == 2:
        one_line_error(capsys)
    else:
        assert code == 0
    after = snapshot(user_dir)
    assert {k: after.get(k) for k in before} == before  # wrote beside them at most
    assert (code == 0) == (command == "export-beside")


# --- help -------------------------------------------------------------------------------------


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _shown(default) -> str:
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, (list, tuple)):
        return ",".join(map(str, default))
    return str(default)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_flag_has_help_and_its_default(name):
    parser = _subparsers()[name]
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and action.help.strip(), f"{name} {action.option_strings or action.dest}: no help"
        if action.default not in (None, False, [], argparse.SUPPRESS):
            entry = " ".join(parser._get_formatter()._expand_help(action).split())
            assert _shown(action.default) in entry, f"{name} {action.option_strings}: default not shown"
        if action.choices:
            assert all(str(c) in text for c in action.choices)


def test_train_flags_show_the_dataclass_defaults():
    from secateurs.train import TrainConfig

    parser = _subparsers()["train"]
    by_dest = {a.dest: a for a in parser._actions}
    for f in dataclasses.fields(TrainConfig):
        action = by_dest[f.name]
        assert not action.help.startswith("training option"), f"--{f.name} has no description"
        if f.default is not None:
            assert f"(default: {_shown(f.default)})" in action.help, f.name


def test_prune_flags_are_the_config_fields_with_their_defaults():
    """Every PruneConfig field is a flag showing the dataclass default, or is listed as not one;
    the --finetune-* flags show the fine-tuning defaults, which differ from training's."""
    from secateurs.commands.prune import FINETUNE_TRAIN_FLAGS, NOT_FLAGS
    from secateurs.pipeline import PruneConfig
    from secateurs.pipeline.config import FINETUNE_TRAIN_DEFAULTS
    from secateurs.train import TrainConfig

    by_dest = {a.dest: a for a in _subparsers()["prune"]._actions}
    for f in dataclasses.fields(PruneConfig):
        if f.name in NOT_FLAGS:
            assert f.name not in by_dest, f.name
            continue
        action = by_dest[f.name]
        assert not action.help.startswith("pruning option"), f"--{f.name} has no description"
        if f.default not in (None, dataclasses.MISSING):
            assert f"(default: {_shown(f.default)})" in action.help, f.name
    train_defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for name in FINETUNE_TRAIN_FLAGS:
        action = by_dest["finetune_" + name]
        assert not action.help.startswith("fine-tuning option"), f"--finetune-{name} has no description"
        default = FINETUNE_TRAIN_DEFAULTS.get(name, train_defaults[name])
        if default is not None:
            assert f"(default: {_shown(default)})" in action.help, name
    assert by_dest["scope"].choices == ("global", "layer")


def test_prune_flags_become_the_config_keywords():
    """What the user typed reaches PruneConfig under the field's name: scalars as given,
    KEY=VALUE flags as dicts, --finetune-* into finetune_train, --tau into method_options."""
    from secateurs.commands.prune import prune_options

    argv = ["prune", "--out", "o", "--macs-reduction", "0.4", "--scope", "layer", "--no-latency"]
    argv += ["--method-option", "alpha=0.7", "--finetune-option", "temperature=2", "--tau", "0.9"]
    argv += ["--finetune-lr", "0.05", "--finetune-max-steps-per-epoch", "3", "--round-to", "8"]
    assert prune_options(build_parser().parse_args(argv)) == {
        "macs_reduction": 0.4,
        "scope": "layer",
        "latency": False,
        "round_to": 8,
        "method_options": {"alpha": 0.7, "tau": 0.9},
        "finetune_options": {"temperature": 2},
        "finetune_train": {"lr": 0.05, "max_steps_per_epoch": 3},
    }
    assert prune_options(build_parser().parse_args(["prune", "--out", "o"])) == {}
    with pytest.raises(SystemExit):  # one target at most
        build_parser().parse_args(["prune", "--out", "o", "--macs-reduction", "0.4", "--params-reduction", "0.4"])


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_ends_with_examples(name):
    text = _subparsers()[name].format_help()
    tail = text[text.index("examples:") :]
    assert f"secateurs {name}" in tail
