"""``secateurs demo`` end to end at a tiny size (synthetic data, two steps per epoch): the
baseline, the two pruning runs, the printed table read from their metrics.json, the
report; and that it deletes or replaces nothing it did not write."""

from __future__ import annotations

import contextlib
import io
import json
import re

import pytest

from secateurs.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [
    "--dataset",
    "synthetic",
    "--dataset-option",
    "num_samples=64",
    "--epochs",
    "1",
    "--max-steps-per-epoch",
    "2",
    "--finetune-max-steps-per-epoch",
    "2",
    "--no-latency",
]


def _demo(out, *extra):
    return main(["demo", "--out", str(out), *TINY, *extra])


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert _demo(out) == 0
    return out, stdout.getvalue()


def test_the_demo_prints_the_table_of_both_runs_and_the_report_path(demo_run):
    out, printed = demo_run
    rows = {line.split()[0]: line.split() for line in printed.splitlines() if re.match(r"(fcs|l1) ", line)}
    assert set(rows) == {"fcs", "l1"}
    for name, cells in rows.items():
        m = json.loads((out / name / "metrics.json").read_text())
        assert cells[1] == m["method"] == name and cells[2] == f"{100 * m['achieved']:.2f}"
        assert cells[3:5] == [f"{m['after']['params']:,}", f"{m['after']['macs']:,}"]
        assert cells[5] == f"{m['before']['top1']:.2f}" and cells[8] == f"{m['after']['top1']:.2f}"
        assert m["rounds"][-1]["recalibration_batches"] > 0  # BN recalibration ran
        assert (out / name / "report.md").is_file()
    report = re.search(r"^report: (.+)$", printed, re.M).group(1)
    assert report == str(out / "comparison.md") and (out / "comparison.md").is_file()
    assert "[1/4]" in printed and "[4/4]" in printed  # progress, step by step


def test_a_second_demo_reuses_the_baseline_and_keeps_a_users_files(demo_run, capsys):
    out, _ = demo_run
    baseline = _files(out / "baseline")
    (out / "my-notes.txt").write_text("mine")
    (out / "l1" / "my-plot.png").write_bytes(b"mine")
    assert _demo(out) == 0
    assert "reusing the baseline" in capsys.readouterr().out
    assert _files(out / "baseline") == baseline
    assert (out / "my-notes.txt").read_text() == "mine" and (out / "l1" / "my-plot.png").read_bytes() == b"mine"
    assert (out / "l1" / "metrics.json").is_file()


def test_fresh_deletes_only_what_the_demo_wrote(demo_run, capsys):
    out, _ = demo_run
    (out / "my-notes.txt").write_text("mine")
    (out / "baseline" / "keep.txt").write_text("mine too")
    old = (out / "baseline" / "model.safetensors").stat().st_mtime_ns
    assert _demo(out, "--fresh") == 0
    assert "training the baseline" in capsys.readouterr().out
    assert (out / "baseline" / "model.safetensors").stat().st_mtime_ns != old
    assert (out / "my-notes.txt").read_text() == "mine" and (out / "baseline" / "keep.txt").read_text() == "mine too"
    written = json.loads((out / "demo.json").read_text())["files"]
    assert not any(name.endswith(("my-notes.txt", "keep.txt", "my-plot.png")) for name in written)


def test_a_folder_that_is_not_a_demo_is_refused_untouched(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("mine")
    assert _demo(tmp_path) == 2
    err = capsys.readouterr().err
    assert "is not a demo run" in err and err.count("\n") == 1
    assert _files(tmp_path) == {"thesis.tex": b"mine"}


def test_other_baseline_options_are_refused_before_anything_changes(demo_run, capsys):
    out, _ = demo_run
    before = _files(out)
    assert _demo(out, "--max-steps-per-epoch", "3") == 2  # the baseline was trained with 2
    assert "pass --fresh" in capsys.readouterr().err
    assert _files(out) == before


def test_a_users_file_where_the_demo_would_write_is_refused_untouched(tmp_path, capsys):
    """A demo folder (it has demo.json) in which a file the demo did not write stands at a
    path the demo writes: refused before anything is deleted or written."""
    (tmp_path / "demo.json").write_text(json.dumps({"files": []}))
    (tmp_path / "fcs").mkdir()
    (tmp_path / "fcs" / "report.md").write_text("mine")
    before = _files(tmp_path)
    assert _demo(tmp_path) == 2
    err = capsys.readouterr().err
    assert "report.md" in err and err.count("\n") == 1
    assert _files(tmp_path) == before
