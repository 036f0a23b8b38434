"""``report.md`` and its figures, written by ``secateurs prune`` and rebuilt or compared by
``secateurs report``: every number in the tables is checked against ``metrics.json`` (and
the fine-tuning epochs against ``finetune-<round>/metrics.jsonl``), every figure is a PNG
that an image library opens."""

from __future__ import annotations

import json
import re
import shutil
import sys

import pytest
import torch
from _commands import DATA, FAST, prune_argv
from PIL import Image

from secateurs.cli import main
from secateurs.io import load

pytestmark = pytest.mark.usefixtures("one_thread")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _prune(trained_checkpoint, folder, method, *extra):
    assert main(prune_argv(trained_checkpoint, folder, *extra, *FAST, method=method, macs=0.5)) == 0
    return folder


@pytest.fixture(scope="module")
def capped(trained_checkpoint, tmp_path_factory):
    """Three rounds, fine-tuning in rounds 1 and 3 (3 epochs with 60% after the last cut:
    [1, 0, 2]): every row kind of the accuracy table, a round without fine-tuning among them."""
    folder = tmp_path_factory.mktemp("report") / "capped"
    return _prune(
        trained_checkpoint, folder, "l1-capped", "--finetune-epochs", "3", "--method-option", "final_share=0.6"
    )


@pytest.fixture(scope="module")
def hnsi(trained_checkpoint, tmp_path_factory):
    return _prune(trained_checkpoint, tmp_path_factory.mktemp("report") / "hnsi", "hnsi", "--finetune-epochs", "2")


def _metrics(run):
    return json.loads((run / "metrics.json").read_text())


def _number(cell: str):
    cell = cell.strip().strip("`")
    if cell == "n/a":
        return None
    if re.fullmatch(r"-?[\d,]+", cell):
        return int(cell.replace(",", ""))
    return float(cell) if re.fullmatch(r"-?\d+\.\d+", cell) else cell


def tables(markdown: str) -> dict[str, list[list]]:
    """The first table under each ``## heading``, as rows of parsed cells (header row dropped)."""
    out, heading = {}, None
    for line in markdown.splitlines():
        if line.startswith("## "):
            heading = line[3:]
        elif line.startswith("|") and heading is not None and not line.startswith("|---"):
            out.setdefault(heading, []).append([_number(c) for c in line.strip("|").split("|")])
    return {k: rows[1:] for k, rows in out.items()}


def _close(a, b) -> bool:
    """Equal as the report prints it: two decimals."""
    return (a is None and b is None) or (a is not None and b is not None and abs(a - b) <= 0.005 + 1e-9)


def test_prune_writes_the_report_beside_metrics_json(capped):
    assert {"report.md", "report-channels.png", "report-top1.png"} <= {p.name for p in capped.iterdir()}
    assert not (capped / "report-kernels.png").exists()  # a filter method has no kernel figure


def test_summary_table_equals_metrics_json(capped):
    m, rows = _metrics(capped), tables((capped / "report.md").read_text())["Summary"]
    by_name = {r[0]: r for r in rows}
    assert by_name["params"][1:3] == [m["before"]["params"], m["after"]["params"]]
    assert by_name["MACs"][1:3] == [m["before"]["macs"], m["after"]["macs"]]
    assert _close(by_name["test top-1 (%)"][1], m["before"]["top1"])
    assert _close(by_name["test top-1 (%)"][2], m["after"]["top1"])
    text = (capped / "report.md").read_text()
    assert f"MACs reduction achieved: {100 * m['achieved']:.2f}%" in text
    assert "Latency was not measured" in text


def test_rounds_table_equals_metrics_json(capped):
    m, rows = _metrics(capped), tables((capped / "report.md").read_text())["Rounds"]
    assert [r[0] for r in rows] == [r["round"] for r in m["rounds"]] == [1, 2, 3]
    for row, rec in zip(rows, m["rounds"]):
        assert _close(row[1], 100 * rec["target"]) and _close(row[2], 100 * rec["achieved"])
        assert row[3] == rec["channels_removed"] and row[7] == rec["finetune_epochs"]
        assert _close(row[4], rec.get("top1_after_cut", rec["top1_after_pruning"]))
        assert _close(row[5], rec.get("top1_after_recalibration"))
        assert _close(row[6], rec["top1_after_finetune"])


def test_accuracy_table_follows_the_run_in_order(capped):
    """Built here from the files by hand: before, then per round the cut, the BN
    recalibration and each fine-tuning epoch of finetune-<r>/metrics.jsonl."""
    m = _metrics(capped)
    expected = [("before", m["before"]["top1"])]
    for rec in m["rounds"]:
        r = rec["round"]
        expected.append((f"r{r} cut", rec.get("top1_after_cut", rec["top1_after_pruning"])))
        if rec.get("top1_after_recalibration") is not None:
            expected.append((f"r{r} BN", rec["top1_after_recalibration"]))
        jsonl = capped / f"finetune-{r}" / "metrics.jsonl"
        if jsonl.exists():
            epochs = map(json.loads, jsonl.read_text().splitlines())
            expected += [(f"r{r} e{e['epoch']}", e["test_top1"]) for e in epochs]
    rows = tables((capped / "report.md").read_text())["Test top-1 through the run"]
    assert [r[0] for r in rows] == [label for label, _ in expected]
    assert all(_close(row[1], value) for row, (_, value) in zip(rows, expected))
    assert sum(label.endswith("e1") for label, _ in expected) == 2  # rounds 1 and 3 fine-tuned


def test_channels_table_equals_metrics_json(capped):
    m, rows = _metrics(capped), tables((capped / "report.md").read_text())["Channels per layer"]
    after = m["channels_after"]
    assert {r[0]: (r[1], r[2]) for r in rows} == {k: (v, after[k]) for k, v in m["channels_before"].items()}


def _assert_png(path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 100 and img.size[1] > 100
        return img.size


def test_figures_are_pngs_named_in_the_report(capped):
    text = (capped / "report.md").read_text()
    for name in ("report-channels.png", "report-top1.png"):
        _assert_png(capped / name)
        assert f"]({name})" in text
    assert "Source: metrics.json `channels_before`, `channels_after`" in text


def test_kernel_method_records_and_reports_kernels_per_layer(hnsi, trained_checkpoint):
    """before.kernels counted by hand on the unpruned weights (every kernel of a trained conv
    is non-zero), after.kernels on the saved pruned model; the report shows both."""
    m = _metrics(hnsi)
    convs = lambda model: {n: mod for n, mod in model.named_modules() if isinstance(mod, torch.nn.Conv2d)}
    assert m["before"]["kernels"] == {
        n: c.out_channels * c.in_channels // c.groups for n, c in convs(load(trained_checkpoint)).items()
    }
    pruned = convs(load(hnsi / "model.safetensors"))
    after = {n: int(c.weight.detach().flatten(2).ne(0).any(-1).sum()) for n, c in pruned.items()}
    assert m["after"]["kernels"] == after and sum(after.values()) < sum(m["before"]["kernels"].values())
    rows = tables((hnsi / "report.md").read_text())["Kernels per layer"]
    assert {r[0]: (r[1], r[2]) for r in rows} == {k: (v, after[k]) for k, v in m["before"]["kernels"].items()}
    summary = {r[0]: r for r in tables((hnsi / "report.md").read_text())["Summary"]}
    assert summary["kernel-sparse MACs"][1:3] == [m["before"]["sparse_macs"], m["after"]["sparse_macs"]]
    _assert_png(hnsi / "report-kernels.png")


def test_report_command_rebuilds_the_same_report(capped, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(capped, run)
    written = (run / "report.md").read_text()
    for name in ("report.md", "report-channels.png", "report-top1.png"):
        (run / name).unlink()
    assert main(["report", str(run)]) == 0
    assert (run / "report.md").read_text() == written.replace(
        f"# Pruning report: {capped.name}\n", f"# Pruning report: {run.name}\n"
    )
    _assert_png(run / "report-top1.png")


def test_without_matplotlib_the_report_says_how_to_get_figures(capped, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(capped, run)
    for png in run.glob("*.png"):
        png.unlink()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # find_spec answers None: not installed
    assert main(["report", str(run)]) == 0
    text = (run / "report.md").read_text()
    assert "matplotlib is not installed" in text and "pip install 'secateurs[plots]'" in text
    assert not list(run.glob("*.png")) and ".png)" not in text
    assert tables(text)["Summary"]  # the tables are all there


def test_a_busy_machine_and_an_unreliable_speedup_are_stated(capped, tmp_path):
    """A run whose interleaved latency comparison recorded a busy machine (metrics.json
    ``latency``, as the pipeline writes it): the report says so instead of a bare figure."""
    run = tmp_path / "busy"
    shutil.copytree(capped, run)
    m = _metrics(run)
    m["before"]["latency_ms"], m["after"]["latency_ms"] = {"1": 2.0, "64": 30.0}, {"1": 1.6, "64": 20.0}
    reason = "the machine was busy: other processes used 1.4 cores on average"
    m["latency"] = {
        "device": "cpu",
        "threads": 1,
        "reliable": False,
        "reasons": [reason],
        "load": {"busy": True, "others_cores": 1.4, "cpu_count": 2},
        "batches": {"1": {"ratio": 1.3}, "64": {"ratio": 1.45}},
    }
    (run / "metrics.json").write_text(json.dumps(m))
    assert main(["report", str(run)]) == 0
    text = (run / "report.md").read_text()
    assert "**Measured on a busy machine**" in text and reason in text and "unreliable" in text
    rows = {r[0]: r for r in tables(text)["Summary"]}
    assert rows["latency b64 (ms)"][1:4] == [30.0, 20.0, "1.45x speed-up"]  # the interleaved ratio


def test_comparison_lists_both_runs_with_their_numbers(capped, hnsi, tmp_path, capsys):
    out = tmp_path / "compare"
    assert main(["report", str(capped), str(hnsi), "--out", str(out)]) == 0
    text = (out / "comparison.md").read_text()
    rows = tables("## t\n" + text)["t"]
    assert [r[0] for r in rows] == [capped.name, hnsi.name]
    for row, run in zip(rows, (capped, hnsi)):
        m = _metrics(run)
        assert row[1] == m["method"] and _close(row[2], 100 * m["achieved"])
        assert row[3:5] == [m["after"]["params"], m["after"]["macs"]]
        assert _close(row[-2], m["after"]["top1"]) and _close(row[-1], m["timing_s"]["total"])
    _assert_png(out / "comparison-top1-macs.png")
    links = dict(re.findall(r"- \[([^\]]+)\]\(([^)]+)\)", text))  # each run's report, relative to --out
    assert {name: (out / link).resolve() for name, link in links.items()} == {
        run.name: (run / "report.md").resolve() for run in (capped, hnsi)
    }


def test_comparison_refuses_to_replace_what_it_did_not_write(capped, hnsi, tmp_path, capsys):
    out = tmp_path / "compare"
    out.mkdir()
    (out / "comparison.md").write_text("my notes")
    assert main(["report", str(capped), str(hnsi), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "comparison.md" in err and "--overwrite" in err and err.count("\n") == 1
    assert (out / "comparison.md").read_text() == "my notes" and [p.name for p in out.iterdir()] == ["comparison.md"]
    assert main(["report", str(capped), str(hnsi), "--out", str(out), "--overwrite"]) == 0
    assert (out / "comparison.md").read_text().startswith("# Comparison of 2 pruning runs")


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["report", "{tmp}"], "holds no metrics.json"),
        (["report", "{tmp}/missing"], "does not exist"),
        (["report", "{run}", "--out", "{tmp}/c"], "--out is for comparing two or more runs"),
        (["report", "{run}", "{run}"], "needs --out"),
    ],
)
def test_bad_report_requests_are_one_line_and_write_nothing(argv, needle, capped, tmp_path, capsys):
    before = sorted(p.name for p in capped.iterdir())
    assert main([a.format(tmp=tmp_path, run=capped) for a in argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == [] and sorted(p.name for p in capped.iterdir()) == before


def test_prune_refuses_an_out_holding_a_users_report(trained_checkpoint, tmp_path, capsys):
    out = tmp_path / "pruned"
    out.mkdir()
    (out / "report.md").write_text("my report")
    assert (
        main(prune_argv(trained_checkpoint, out, "--finetune", "none", "--no-latency", *DATA, method="l1", macs=0.5))
        == 2
    )
    assert "report.md" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["report.md"] and (out / "report.md").read_text() == "my report"
