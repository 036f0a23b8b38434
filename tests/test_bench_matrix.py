"""The benchmark matrix harness (benchmarks/matrix.py, report.py), run as the user runs it:
as scripts, in a subprocess, on the ``tiny`` profile (synthetic data, ``test_resnet``).

What is checked against an independent reference: the tables' mean ± std against
``statistics`` over the result files, and the significance mark and claim statuses against
figures computed by hand below.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _script(name: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(BENCH / name), *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def _paths(tmp: Path) -> list[str]:
    return ["--results", str(tmp / "results"), "--cache", str(tmp / "cache")]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Two methods, two seeds, 50% MACs, two runs at a time: four result files and a report."""
    tmp = tmp_path_factory.mktemp("matrix")
    args = [
        "--profile",
        "tiny",
        "--methods",
        "l1",
        "random",
        "--seeds",
        "0",
        "1",
        "--budgets",
        "50",
        "--jobs",
        "2",
        *_paths(tmp),
        "--report",
        str(tmp / "REPORT.md"),
    ]
    done = _script("matrix.py", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (BENCH / "results" / "baselines_tiny.md").exists()  # nothing written into the repository
    return tmp, args


@pytest.mark.slow
def test_tiny_matrix_writes_one_result_per_cell(tiny_run):
    tmp, _ = tiny_run
    files = sorted(p.name for p in (tmp / "results" / "tiny").glob("*.json"))
    assert files == [f"test_resnet__{v}__macs50__s{s}.json" for v in ("l1", "random") for s in (0, 1)]
    for name in files:
        r = json.loads((tmp / "results" / "tiny" / name).read_text())
        assert abs(r["achieved"] - 0.5) < 0.02  # the target, in MACs, of the pruned model
        assert r["macs"] < r["baseline"]["macs"] and r["params"] < r["baseline"]["params"]
        assert r["finetune_epochs"] == 2 and r["budget"]["epochs"] == 2  # the budget travels with the result
        assert 0 <= r["top1"] <= 100 and r["speedup_b64"] > 0 and r["cpu_s"] > 0


@pytest.mark.slow
def test_tiny_report_tables_are_mean_and_std_over_seeds(tiny_run):
    tmp, _ = tiny_run
    runs = {
        v: [
            json.loads((tmp / "results" / "tiny" / f"test_resnet__{v}__macs50__s{s}.json").read_text())["top1"]
            for s in (0, 1)
        ]
        for v in ("l1", "random")
    }
    md = (tmp / "REPORT.md").read_text()
    data = json.loads((tmp / "REPORT.json").read_text())
    for v, xs in runs.items():
        fig = data["figures"][f"test_resnet/macs50/{v}"]["top1"]
        assert fig["mean"] == pytest.approx(statistics.fmean(xs)) and fig["n"] == 2
        assert fig["std"] == pytest.approx(statistics.stdev(xs))
        row = next(line for line in md.splitlines() if line.startswith(f"| {v} |"))
        assert f"{statistics.fmean(xs):.2f} ± {statistics.stdev(xs):.2f}" in row
    assert "| tp-magnitude | 0 | not run |" in md  # planned, not run: shown, never filled in
    assert "Total CPU time of the runs" in md and "python benchmarks/matrix.py --profile tiny" in md
    assert "Memory layout of the fine-tuning (the same arithmetic in another order): NCHW in 4 runs." in md
    assert ("![top-1 against MACs reduction](matrix_tiny.png)" in md) == (tmp / "matrix_tiny.png").exists()


@pytest.mark.slow
def test_resumed_matrix_skips_finished_cells(tiny_run):
    tmp, args = tiny_run
    folder = tmp / "results" / "tiny"
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")}
    again = _script("matrix.py", *args, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 done, 0 running elsewhere, 0 stale (delete them to rerun), 0 to run" in again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")} == stamps


@pytest.mark.slow
def test_a_cell_claimed_by_a_live_process_is_skipped_and_a_dead_claim_is_taken_over(tiny_run):
    """A second invocation never runs a cell in flight elsewhere (its CELL.running is locked:
    here by this test), and the file a finished or killed run leaves does not block it."""
    import fcntl

    tmp, args = tiny_run
    folder = tmp / "results" / "tiny"
    result = next(folder.glob("*__l1__*.json"))
    kept = result.read_text()
    result.unlink()
    claim = result.with_suffix(".running")
    with open(claim, "w") as held:
        held.write(f"{os.getpid()}\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX)
        listed = _script("matrix.py", *args, "--list", timeout=120)
        assert f"running (pid {os.getpid()})  {result.stem}" in listed.stdout
        again = _script("matrix.py", *args, "--no-report", timeout=120)
        assert again.returncode == 0 and "3 done, 1 running elsewhere, 0 stale (delete them to rerun), 0 to run" in (
            again.stderr
        )
        forced = _script("matrix.py", *args[:2], *_paths(tmp), "--run-cell", result.stem, timeout=120)
        assert forced.returncode == 0 and "running elsewhere, skipped" in forced.stderr  # skipped, not failed
        assert not result.exists()
    assert claim.exists()  # the lock went with the file handle; the file stays, unlocked
    taken = _script("matrix.py", *args, "--no-report", timeout=600)
    assert taken.returncode == 0, taken.stderr[-3000:]
    assert "3 done, 0 running elsewhere, 0 stale (delete them to rerun), 1 to run" in taken.stderr
    assert result.exists()
    assert json.loads(result.read_text())["top1"] == json.loads(kept)["top1"]  # same seed, same run


def test_unfinished_baselines_are_named_with_their_epochs(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    from _matrix_spec import PROFILES
    from baselines import PROFILES as BASELINES
    from baselines import run_dir
    from matrix import unfinished_baselines

    profile = PROFILES["tiny"]
    (spec,) = [b for b in BASELINES[profile.baselines] if b.model == "test_resnet"]
    assert unfinished_baselines(profile, ["test_resnet"], tmp_path) == {"test_resnet": (0, spec.epochs)}
    metrics = run_dir("test_resnet", profile.baselines, tmp_path) / "metrics.jsonl"
    metrics.parent.mkdir(parents=True)
    metrics.write_text("{}\n" * (spec.epochs - 1))
    assert unfinished_baselines(profile, ["test_resnet"], tmp_path) == {"test_resnet": (spec.epochs - 1, spec.epochs)}
    metrics.write_text("{}\n" * spec.epochs)
    assert unfinished_baselines(profile, ["test_resnet"], tmp_path) == {}


def _record(
    variant: str, seed: int, top1: float, params: int = 800, cut: float | None = None, target: str = "macs50"
) -> dict:
    """A result file as the runner writes it, with chosen figures."""
    return {
        "cell": f"test_resnet__{variant}__{target}__s{seed}",
        "profile": "tiny",
        "model": "test_resnet",
        "variant": variant,
        "method": variant,
        "target": target,
        "seed": seed,
        "budget": {"epochs": 2},
        "finetune": "tft",
        "finetune_epochs": 2,
        "bn_recalibration": 20,
        "baseline": {"top1": 92.0, "params": 1000, "macs": 2000},
        "achieved": 0.5,
        "params": params,
        "macs": 1000,
        "sparse_macs": 1000,
        "top1_cut_raw": cut,
        "top1_cut": cut,
        "top1": top1,
        "rounds": 1,
        "latency_b64_ms": {"baseline": 2.0, "pruned": 1.0},
        "speedup_b64": 2.0,
        "wall_s": 10.0,
        "cpu_s": 9.0,
        "finetune_s": 5.0,
        "notes": [],
        "details": {},
        "machine": {
            "cpu": "test",
            "cpu_count": 2,
            "torch_threads": 1,
            "platform": "-",
            "python": "3",
            "torch": "2",
            "gpu": None,
            "date": "-",
        },
    }


def test_significance_and_claims_match_a_hand_computation(tmp_path):
    """l1 = 90.0/90.2/90.4 (mean 90.2, sd 0.2). l1-capped = +0.8 on each seed: the difference
    0.80 against 2SE = 2 sqrt(0.04/3 + 0.04/3) = 0.33, significant, claim met. fcs =
    90.1/90.5/90.9 (sd 0.4): 0.30 against 2SE = 2 sqrt(0.04/3 + 0.16/3) = 0.52, not significant.
    Torch-Pruning one seed only: no standard error, no test ("too few seeds"). probability: 20% fewer
    params, 0.30 point lost: met."""
    folder = tmp_path / "results" / "tiny"
    folder.mkdir(parents=True)
    values = {
        "l1": [90.0, 90.2, 90.4],
        "l1-capped": [90.8, 91.0, 91.2],
        "fcs": [90.1, 90.5, 90.9],
        "tp-magnitude": [80.0],
    }
    records = [_record(v, s, x) for v, xs in values.items() for s, x in enumerate(xs)]
    records += [_record("probability-tau0.99", s, 91.7, params=800, cut=91.7, target="own") for s in range(2)]
    records += [_record("l1", s, 85.0, target="macs75") for s in range(2)]  # a second point on l1's curve
    for r in records:
        (folder / f"{r['cell']}.json").write_text(json.dumps(r))
    done = _script(
        "report.py",
        "--profile",
        "tiny",
        "--results",
        str(tmp_path / "results"),
        "--report",
        str(tmp_path / "REPORT.md"),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    md = (tmp_path / "REPORT.md").read_text()
    section = md.split("### test_resnet, macs50")[1].split("###")[0]
    rows = {line.split(" | ")[0][2:]: line for line in section.splitlines() if line.startswith("| ")}
    assert "| +0.80* (2SE 0.33) |" in rows["l1-capped"]
    assert "| +0.30 (2SE 0.52) |" in rows["fcs"]
    assert "| -10.20 |" in rows["tp-magnitude"]  # one seed: a difference, no mark
    claims = {(c[1].split(":")[0], c[2]): c[4] for c in json.loads((tmp_path / "REPORT.json").read_text())["claims"]}
    assert claims[("l1-capped vs l1", "test_resnet, macs50")] == "met"
    assert claims[("fcs vs l1", "test_resnet, macs50")] == "not significant"
    assert claims[("l1-capped vs tp-magnitude", "test_resnet, macs50")] == "too few seeds"
    assert claims[("hnsi vs l1", "test_resnet, macs50")] == "not run yet"
    assert ("![top-1 against MACs reduction](matrix_tiny.png)" in md) == (tmp_path / "matrix_tiny.png").exists()
    prob = next(
        c for c in json.loads((tmp_path / "REPORT.json").read_text())["claims"] if c[0].endswith("(probability)")
    )
    assert prob[4] == "met" and "params -20.0" in prob[3] and "lost 0.30" in prob[3]


def test_unknown_filter_is_refused_with_the_choices(tmp_path):
    done = _script("matrix.py", "--profile", "tiny", "--methods", "l9", "--list", *_paths(tmp_path), timeout=120)
    assert done.returncode != 0
    assert "--methods l9: not in this profile" in done.stderr and "random" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "results").exists()


def test_auto_pick_is_checked_against_the_best_one_round_run_on_its_seed(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    from _matrix_auto import auto_rows

    def run(variant, seed, top1, auto=None):
        return {"variant": variant, "seed": seed, "top1": top1, "details": {"auto": auto} if auto else {}}

    def picked(method):
        return {"chosen": method, "candidates": [{"method": method, "holdout_top1": 80.0, "seconds": 3.0}]}

    key = ("resnet20", "macs50")
    groups = {
        (*key, "l1"): [run("l1", 0, 90.0), run("l1", 1, 91.0)],
        (*key, "fcs"): [run("fcs", 0, 90.5), run("fcs", 1, 90.0)],
        (*key, "auto"): [run("auto", 0, 90.4, picked("fcs")), run("auto", 1, 90.1, picked("fcs"))],
    }
    rows, summary = auto_rows(groups)
    assert [r[5] for r in rows] == ["yes", "no"]  # seed 0: fcs best (90.5); seed 1: l1 best (91.0)
    assert rows[1][4] == "`l1` (91.00)" and rows[0][3] == "`fcs` (80.00)" and rows[0][6] == "3"
    assert "1 of 2" in summary


def test_auto_pick_is_not_judged_while_a_candidate_that_might_beat_it_has_no_run(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    from _matrix_auto import verdict

    scored = ["l1", "fcs", "feature-l1"]
    # the pick is the best of the runs that are there, but feature-l1's is missing
    assert verdict("fcs", scored, {"l1": 90.0, "fcs": 90.5}) == "not comparable"
    # the pick's own run is missing: nothing can be said, whatever the others did
    assert verdict("fcs", scored, {"l1": 90.0, "feature-l1": 89.0}) == "not comparable"
    # a run above the pick's settles it at once
    assert verdict("fcs", scored, {"l1": 91.0, "fcs": 90.5}) == "no"
    assert verdict("fcs", scored, {"l1": 90.0, "fcs": 90.5, "feature-l1": 90.4}) == "yes"
    # a candidate auto could not score (refused) is not waited for
    assert verdict("fcs", ["l1", "fcs"], {"l1": 90.0, "fcs": 90.5}) == "yes"


def test_matrix_auto_offers_exactly_the_candidates_it_can_be_judged_against(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    from _matrix_auto import ONE_ROUND
    from _matrix_spec import VARIANTS

    from secateurs.methods import get_method

    options = get_method("auto").make_options(VARIANTS["auto"].options["method_options"])
    assert set(options.methods) == set(ONE_ROUND)
    for method, variant in ONE_ROUND.items():  # each judge runs that method alone, in one round
        v = VARIANTS[variant]
        assert v.method == method and v.finetune == "tft" and v.epochs_share == 1.0
        assert v.options.get("rounds", get_method(method).rounds) == 1


def test_side_results_list_only_the_files_that_are_there(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    from _side_results import side_results

    assert side_results(tmp_path) == []
    for name in ("engine_timing.md", "cut_only_resnet20.md", "cut_only_resnet56.md", "notes.md"):
        (tmp_path / name).write_text("x")
    lines = side_results(tmp_path)
    assert [line.split("`")[1] for line in lines] == [
        "cut_only_resnet20.md",
        "cut_only_resnet56.md",
        "engine_timing.md",
    ]
    assert lines[0].startswith("- [`cut_only_resnet20.md`](cut_only_resnet20.md): if you cannot fine-tune")


def test_every_converged_variant_resolves_and_l1_capped_schedules_match_a_hand_split(monkeypatch) -> None:
    """A variant's options reach the pipeline only when its cell runs (half an hour in); each is
    resolved here, and the l1-capped schedules, the point of those variants, are written out."""
    monkeypatch.syspath_prepend(str(BENCH))
    from _matrix_config import cell_config
    from _matrix_spec import PROFILES, TP, VARIANTS, cells

    from secateurs.pipeline.plan import RunPlan

    profile = PROFILES["converged"]
    first = {}  # each variant's first cell (its model and target are the block's)
    for cell in cells(profile):
        first.setdefault(cell.variant, cell)
    plans = {name: RunPlan.resolve(cell_config(c, profile)) for name, c in first.items() if VARIANTS[name].method != TP}
    assert set(plans) | {TP} == set(first)
    assert profile.budget.epochs == 5
    cut = [5 / 9, 8 / 9, 1.0]  # 1 - (1 - i/3)**2, the default front-loading
    hand = {
        "l1-capped": (cut, [0, 0, 5]),  # the default, final_share 1.0: every epoch after the last cut
        "l1-capped-split": (cut, [1, 1, 3]),  # final_share 0.6: 3 of 5 after the last cut
        "l1-capped-1r": ([1.0], [5]),
        "l1-capped-2r": ([0.75, 1.0], [1, 4]),  # 1 - (1/2)**2; final_share 0.8
        "l1-capped-ref": (cut, [1, 1, 3]),  # the former split, scored on the unpruned scale
        "l1-capped-alloc": (cut, [1, 1, 3]),  # the former split, counts solved once
        "l1-capped-alloc-late": (cut, [0, 0, 5]),  # the default, counts solved once
    }
    for name, (shares, epochs) in hand.items():
        assert [r.share for r in plans[name].rounds] == pytest.approx(shares), name
        assert plans[name].epochs == epochs, name
    assert plans["l1-capped-ref"].keeps_unpruned and not plans["l1-capped"].keeps_unpruned
    assert plans["l1-capped-alloc-late"].keeps_unpruned


@pytest.mark.slow
def test_a_result_of_an_older_variant_definition_is_set_aside_not_averaged(tiny_run):
    """Each result records its variant's definition; one that differs from today's is shown
    as stale, left out of the tables (with its name under "Set aside") and not rerun."""
    tmp, args = tiny_run
    folder = tmp / "results" / "tiny"
    path = folder / "test_resnet__random__macs50__s1.json"  # the table read below is macs50's
    record = json.loads(path.read_text())
    assert record["variant_spec"] == {
        "method": "random",
        "options": {},
        "finetune": "tft",
        "epochs_share": 1.0,
        "recalibrate": None,
    }
    original = path.read_text()
    record["variant_spec"]["options"] = {"rounds": 3}
    path.write_text(json.dumps(record))
    try:
        listed = _script("matrix.py", *args, "--list", timeout=120)
        assert f"stale    {path.stem}" in listed.stdout and "1 stale" in listed.stdout
        report = tmp / "REPORT_stale.md"
        done = _script("report.py", "--profile", "tiny", "--results", str(tmp / "results"), "--report", str(report))
        assert done.returncode == 0, done.stderr[-3000:]
        md = report.read_text()
        assert (
            "Set aside (run under an older definition of their variant or of a method default; delete them to "
            f"rerun): `{path.stem}`."
        ) in md
        not_run = md.split("## Not run")[1].split("Set aside")[0]
        assert "random macs50 seed 1" not in not_run  # listed once, as set aside: it will not run again
        row = next(
            line for line in md.split("### test_resnet, macs50")[1].splitlines() if line.startswith("| random |")
        )
        assert row.startswith("| random | 1 |")  # one seed left, not two
    finally:
        path.write_text(original)


def test_a_result_whose_configuration_now_resolves_differently_is_outdated(monkeypatch) -> None:
    """A method default changed under an unchanged variant: the record's ``resolved`` (written
    when it ran) differs from today's, so the result is outdated although its variant spec is
    the same; a record without ``resolved`` (older files) and Torch-Pruning's cells count as
    current."""
    monkeypatch.syspath_prepend(str(BENCH))
    from _matrix_config import cell_config, outdated, resolved
    from _matrix_spec import PROFILES, TP, VARIANTS, Cell

    cell = Cell("resnet20", "l1-capped", "macs50", 0)
    now = resolved(cell, cell_config(cell, PROFILES["converged"]))
    assert now["method_options"]["final_share"] == 1.0 and [e for _, e in now["rounds"]] == [0, 0, 5]
    record = {
        "model": "resnet20",
        "variant": "l1-capped",
        "target": "macs50",
        "seed": 0,
        "profile": "converged",
        "variant_spec": VARIANTS["l1-capped"].spec(),
    }
    assert not outdated(record)  # nothing recorded: cannot tell
    assert not outdated(record | {"resolved": now})
    before = json.loads(json.dumps(now))
    before["method_options"]["final_share"] = 0.6  # the default it ran under
    assert outdated(record | {"resolved": before})
    before = json.loads(json.dumps(now))
    before["rounds"][0][1] = 2  # another epoch split
    assert outdated(record | {"resolved": before})
    before = json.loads(json.dumps(now))
    before["run"]["min_keep_fraction"] = 0.2  # a run-level default
    assert outdated(record | {"resolved": before})
    before = json.loads(json.dumps(now))
    before["train"][-1]["weight_decay"] = 1e-4  # a fine-tuning default
    assert outdated(record | {"resolved": before})
    # The first resolutions held the options and rounds only: those parts are compared.
    first = {k: now[k] for k in ("method_options", "finetune_options", "rounds")}
    assert not outdated(record | {"resolved": first})
    assert outdated(record | {"resolved": first | {"rounds": [[1.0, 5]]}})
    tp = Cell("resnet20", TP, "macs50", 0)
    assert resolved(tp, cell_config(tp, PROFILES["converged"])) is None


def test_backfill_records_todays_resolution_only_where_the_result_agrees_with_it(monkeypatch) -> None:
    """A result from before resolutions were recorded gets today's, checked against the rounds
    it says it ran (each round's target and epochs); one whose rounds differ is refused, and a
    result that already holds one, or a Torch-Pruning cell, gets nothing."""
    monkeypatch.syspath_prepend(str(BENCH))
    from _matrix_config import backfill, cell_config, outdated, resolved
    from _matrix_spec import PROFILES, TP, VARIANTS, Cell

    cell = Cell("resnet20", "l1-capped-split", "macs50", 1)
    now = resolved(cell, cell_config(cell, PROFILES["converged"]))
    # The split schedule by hand: cuts at 5/9, 8/9 and all of the 50% target, 1 + 1 + 3 epochs.
    ran = [{"target": 0.5 * 5 / 9, "finetune_epochs": 1}, {"target": 0.5 * 8 / 9, "finetune_epochs": 1}]
    ran.append({"target": 0.5, "finetune_epochs": 3})
    record = {
        "cell": cell.name,
        "model": "resnet20",
        "variant": "l1-capped-split",
        "target": "macs50",
        "seed": 1,
        "profile": "converged",
        "variant_spec": VARIANTS["l1-capped-split"].spec(),
        "details": {"per_round": ran},
        # as the converged profile's first results hold them: channels-last, a speed option only
        "budget": {"epochs": 5, "max_steps_per_epoch": None, "lr": 0.01, "batch_size": 128, "channels_last": True},
        "bn_recalibration": 20,
    }
    assert backfill(record) == now
    assert not outdated(record | {"resolved": backfill(record)})
    assert backfill(record | {"resolved": now}) is None
    other = json.loads(json.dumps(record))
    other["details"]["per_round"][0]["finetune_epochs"] = 2  # it ran another split
    with pytest.raises(ValueError, match=r"ran rounds \(target, epochs\) .*, today"):
        backfill(other)
    with pytest.raises(ValueError, match="ran budget .*'lr': 0.02"):
        backfill(record | {"budget": record["budget"] | {"lr": 0.02}})
    with pytest.raises(ValueError, match="ran BN recalibration 0, today 20"):
        backfill(record | {"bn_recalibration": 0})
    assert backfill(record | {"profile": "retired"}) is None  # an unknown profile: nothing to compare with
    tp = record | {"cell": "resnet20__tp-magnitude__macs50__s1", "variant": TP, "variant_spec": VARIANTS[TP].spec()}
    assert backfill(tp) is None


def _matrix_record(variant: str, seed: int, **over) -> dict:
    """A converged-profile result of resnet20 at 50% MACs as a cell of ``variant`` writes it
    today (its definition and resolution); ``over`` replaces fields. BENCH must be importable."""
    from _matrix_config import cell_config, resolved
    from _matrix_spec import PROFILES, VARIANTS, Cell

    cell = Cell("resnet20", variant, "macs50", seed)
    record = {
        "cell": cell.name,
        "model": "resnet20",
        "variant": variant,
        "target": "macs50",
        "seed": seed,
        "profile": "converged",
        "variant_spec": VARIANTS[variant].spec(),
        "resolved": resolved(cell, cell_config(cell, PROFILES["converged"])),
    }
    return record | over


def test_relabel_moves_a_result_only_to_a_variant_that_resolves_to_what_it_ran(monkeypatch) -> None:
    """A default that moves onto another variant's options makes that variant's runs the
    default's: relabelling checks the recorded resolution against the target variant's whole
    resolution today, keeps where the run came from, and refuses any other variant."""
    monkeypatch.syspath_prepend(str(BENCH))
    import _matrix_spec
    from _matrix_config import relabel
    from _matrix_spec import VARIANTS, Variant

    monkeypatch.setitem(_matrix_spec.VARIANTS, "l1-capped-copy", Variant("l1-capped", summary="the default again"))
    record = _matrix_record("l1-capped", 2, top1=94.0)
    cell = record["cell"]
    moved = relabel(record, "l1-capped-copy")
    assert moved["cell"] == "resnet20__l1-capped-copy__macs50__s2" and moved["variant"] == "l1-capped-copy"
    assert moved["relabelled_from"] == cell and moved["top1"] == 94.0
    assert moved["variant_spec"] == VARIANTS["l1-capped-copy"].spec()
    with pytest.raises(ValueError, match="did not run what resnet20__l1-capped-1r__macs50__s2 resolves to"):
        relabel(record, "l1-capped-1r")  # one round: another schedule
    first = {k: v for k, v in record["resolved"].items() if k in ("method_options", "finetune_options", "rounds")}
    assert relabel(record | {"resolved": first}, "l1-capped-copy")["resolved"] == first  # the parts recorded
    with pytest.raises(ValueError, match="did not run what"):
        relabel(record | {"resolved": None}, "l1-capped-copy")  # nothing recorded: cannot tell
    with pytest.raises(ValueError, match="did not run what"):
        relabel(record | {"resolved": {"run": record["resolved"]["run"]}}, "l1-capped-copy")  # no options
    with pytest.raises(ValueError, match="name a secateurs variant"):
        relabel(record, "tp-magnitude")
    monkeypatch.setitem(_matrix_spec.VARIANTS, "l1-capped-none", Variant("l1-capped", finetune="none"))
    with pytest.raises(ValueError, match="ran as .*'finetune': 'tft'.* l1-capped-none is"):
        relabel(record, "l1-capped-none")  # another fine-tuning, which a resolution does not hold
    # A first resolution (options and rounds only) cannot show a run-level option: the variants'
    # other options must then be alike.
    monkeypatch.setitem(_matrix_spec.VARIANTS, "l1-capped-layer", Variant("l1-capped", {"scope": "layer"}))
    with pytest.raises(ValueError, match="recorded no run-level resolution"):
        relabel(record | {"resolved": first}, "l1-capped-layer")
    with pytest.raises(ValueError, match="its run differ"):
        relabel(record, "l1-capped-layer")  # with the run part recorded, the resolutions tell
    # A result from before variant definitions were recorded ran under today's.
    assert relabel(record | {"variant_spec": None}, "l1-capped-copy")["variant_spec"] == moved["variant_spec"]


def test_relabel_in_place_when_a_variant_spells_out_the_old_default(monkeypatch) -> None:
    """A variant's options that now name the default it ran under: the result is rewritten
    under the new definition, so it is no longer set aside as stale."""
    monkeypatch.syspath_prepend(str(BENCH))
    import _matrix_spec
    from _matrix_config import outdated, relabel
    from _matrix_spec import Variant, stale

    record = _matrix_record("l1-capped-split", 0)
    old = Variant("l1-capped", {"method_options": {"final_share": 0.6, "front_load": 2.0}})
    assert stale(record | {"variant_spec": old.spec()}) and outdated(record | {"variant_spec": old.spec()})
    moved = relabel(record | {"variant_spec": old.spec()}, "l1-capped-split")
    assert moved["cell"] == record["cell"] and not stale(moved) and not outdated(moved)
    assert moved["relabelled_spec"] == old.spec() and "relabelled_from" not in moved
    monkeypatch.setitem(
        _matrix_spec.VARIANTS, "l1-capped-split", Variant("l1-capped", {"method_options": {"final_share": 0.8}})
    )
    with pytest.raises(ValueError, match="did not run what"):
        relabel(record, "l1-capped-split")  # 0.8 splits the epochs otherwise: [1, 0, 4]


def test_relabel_command_moves_every_result_or_none(monkeypatch, tmp_path) -> None:
    """``matrix.py --relabel``'s loop: every chosen result is checked before any file moves, so
    one refusal leaves all in place; otherwise each moves to its new cell and the old is gone,
    and a target cell that already holds a result is named and skipped."""
    monkeypatch.syspath_prepend(str(BENCH))
    import _matrix_spec
    from _matrix_spec import Cell, Variant
    from matrix import _relabel

    monkeypatch.setitem(_matrix_spec.VARIANTS, "l1-capped-copy", Variant("l1-capped", summary="the default again"))

    def write(seed: int, **over) -> Cell:
        record = _matrix_record("l1-capped", seed, **over)
        (tmp_path / f"{record['cell']}.json").write_text(json.dumps(record))
        return Cell("resnet20", "l1-capped", "macs50", seed)

    cells = [write(0), write(1, resolved=None)]  # seed 1 recorded no resolution: refused
    with pytest.raises(ValueError, match="resnet20__l1-capped__macs50__s1 did not run what"):
        _relabel(tmp_path, cells, "l1-capped-copy")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{c.name}.json" for c in cells]  # nothing moved
    cells[1] = write(1)
    (tmp_path / "resnet20__l1-capped-copy__macs50__s1.json").write_text("{}")  # taken
    assert _relabel(tmp_path, cells, "l1-capped-copy") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "resnet20__l1-capped-copy__macs50__s0.json",
        "resnet20__l1-capped-copy__macs50__s1.json",
        "resnet20__l1-capped__macs50__s1.json",
    ]
    moved = json.loads((tmp_path / "resnet20__l1-capped-copy__macs50__s0.json").read_text())
    assert moved["relabelled_from"] == "resnet20__l1-capped__macs50__s0"
