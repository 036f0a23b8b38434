"""A pruning run killed mid-way resumes where it stopped and ends with the model an
uninterrupted run gives (the cuts of later rounds depend on the fine-tuned weights)."""

from __future__ import annotations

import pytest
import torch
from _commands import fast, prune_argv

import secateurs
from secateurs.cli import main
from secateurs.data import load_dataset
from secateurs.train import trainer

OPTIONS = dict(
    macs_reduction=0.5,
    rounds=3,
    finetune_epochs=6,
    latency=False,
    finetune_train={"batch_size": 64, "progress": False, "max_steps_per_epoch": 2},
)
#: l1-capped with an even split, [2, 2, 2] (its default gives every epoch to the last round):
#: the kills below land in fine-tuning between cuts, so the later cuts depend on resumed weights.
CAPPED = {**OPTIONS, "method_options": {"final_share": None}}


@pytest.fixture(scope="module")
def data():
    kw = dict(num_samples=128, num_classes=4)
    return load_dataset("synthetic", "train", **kw), load_dataset("synthetic", "test", **kw)


def _model():
    torch.manual_seed(0)
    return secateurs.create_model("test_resnet", num_classes=4, in_channels=3)


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    """The run every kill below is compared with (the same for all: computed once); read only."""
    train_set, test_set = data
    run_dir = tmp_path_factory.mktemp("resume") / "whole"
    return secateurs.prune(_model(), "l1-capped", train_set=train_set, test_set=test_set, run_dir=run_dir, **CAPPED)


@pytest.mark.parametrize("kill_after_writes", [1, 3, 4])  # in round 1; mid round 2; at round 2's end
def test_resume_after_a_kill_matches_an_uninterrupted_run(
    data, uninterrupted, tmp_path, monkeypatch, kill_after_writes
):
    train_set, test_set = data
    whole, whole_report = uninterrupted
    real = trainer._write_epoch
    writes = []

    def dying(*args, **kwargs):
        real(*args, **kwargs)
        writes.append(1)
        if len(writes) == kill_after_writes:
            raise Killed

    monkeypatch.setattr(trainer, "_write_epoch", dying)
    with pytest.raises(Killed):
        secateurs.prune(
            _model(), "l1-capped", train_set=train_set, test_set=test_set, run_dir=tmp_path / "cut", **CAPPED
        )
    monkeypatch.setattr(trainer, "_write_epoch", real)
    resumed, report = secateurs.prune(
        _model(), "l1-capped", train_set=train_set, test_set=test_set, run_dir=tmp_path / "cut", resume=True, **CAPPED
    )
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape and torch.equal(a[k], b[k]), k
    assert [r.channels_removed for r in report.rounds] == [r.channels_removed for r in whole_report.rounds]
    assert report.after == whole_report.after


def test_resume_refuses_another_configuration(data, tmp_path):
    train_set, test_set = data
    secateurs.prune(_model(), "l1", train_set=train_set, test_set=test_set, run_dir=tmp_path, **OPTIONS)
    with pytest.raises(secateurs.ConfigError, match="different configuration"):
        secateurs.prune(
            _model(),
            "l1",
            train_set=train_set,
            test_set=test_set,
            run_dir=tmp_path,
            resume=True,
            **{**OPTIONS, "macs_reduction": 0.4},
        )


def test_a_new_run_into_an_old_runs_folder_is_refused_and_touches_nothing(data, tmp_path):
    """Without resume, a run_dir holding an earlier run is refused before anything runs: the
    old run's finetune-1/ would otherwise be resumed onto the new cut (its weights returned as
    the new run's). The old run's files and the model passed in are left as they were."""
    import shutil

    train_set, test_set = data
    old = tmp_path / "old"
    secateurs.prune(_model(), "l1", train_set=train_set, test_set=test_set, run_dir=old, **OPTIONS)
    files = {p: p.read_bytes() for p in old.rglob("*") if p.is_file()}
    model = _model()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(secateurs.ConfigError, match=r"already holds \(part of\) a pruning run \(progress"):
        secateurs.prune(model, "fpgm", train_set=train_set, test_set=test_set, run_dir=old, **OPTIONS)
    assert {p: p.read_bytes() for p in old.rglob("*") if p.is_file()} == files
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    # the fine-tuning folders alone are enough to refuse
    only_ft = tmp_path / "only_ft"
    shutil.copytree(old / "finetune-1", only_ft / "finetune-1")
    with pytest.raises(secateurs.ConfigError, match="finetune-1"):
        secateurs.prune(_model(), "l1", train_set=train_set, test_set=test_set, run_dir=only_ft, **OPTIONS)


def test_resume_refuses_options_whose_defaults_moved(data, tmp_path):
    """The options as given match, but one resolves differently now than when the run started
    (a default changed in between: simulated by editing the saved resolved options). The run
    would go on as another run, so it is refused by name, and the directory is left as it is."""
    from secateurs.io import load, read_meta, save
    from secateurs.pipeline.progress import PROGRESS_FILE

    train_set, test_set = data
    options = {**OPTIONS, "finetune": "mlft"}
    secateurs.prune(_model(), "l1", train_set=train_set, test_set=test_set, run_dir=tmp_path, **options)
    path = tmp_path / PROGRESS_FILE
    meta = read_meta(path)
    resolved = meta["prune_progress"]["resolved"]
    assert resolved["finetune_options"]["peer_every"] == 4  # the defaults, filled in, were saved
    assert resolved["method_options"] == {}  # l1 has no options
    resolved["finetune_options"]["peer_every"] = 1  # as a run started before the default was 4
    save(load(path, model=_model()), path, meta)
    before = path.read_bytes()

    with pytest.raises(secateurs.ConfigError, match=r"finetune_options .*peer_every: 1 then, 4 now"):
        secateurs.prune(
            _model(), "l1", train_set=train_set, test_set=test_set, run_dir=tmp_path, resume=True, **options
        )
    assert path.read_bytes() == before


def test_cli_resume(trained_checkpoint, tmp_path, capsys):
    out = tmp_path / "p"
    args = prune_argv(trained_checkpoint, out, "--finetune-epochs", "1", *fast(1), method="l1", macs=0.4)
    assert main(args) == 0
    capsys.readouterr()
    assert main(["prune", "--resume", "--out", str(out), "--macs-reduction", "0.3"]) == 2
    assert "macs_reduction" in capsys.readouterr().err
    assert main(["prune", "--resume", "--out", str(out), "--no-latency"]) == 0  # a finished run: nothing to redo
