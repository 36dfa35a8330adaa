"""The confirmation stage: its statistics on hand-made numbers, and real confirmation runs under a local Ray."""
import json
import math
import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import REPO, kill_driver, run_cli
from test_search import SMALL, search, space  # the small model's space text, search.py under Ray
from tune_p7.confirm import aggregate, difference, new_seeds, robust_deploy, robust_pass, t_interval

pytestmark = pytest.mark.usefixtures("ray_cluster")  # searches join the session's Ray node (conftest)

SEARCH = REPO / "tune_p7" / "search.py"


# ------------------------------------------------------------------------------------------------ statistics
def test_t_interval_matches_the_textbook_value_and_contains_the_mean():
    mean, lo, hi = t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    # mean 3, s = sqrt(2.5), t_{4, 0.975} = 2.776445: half-width 2.776445 * 1.581139 / sqrt(5) = 1.963243
    assert mean == 3.0 and lo == pytest.approx(3 - 1.963243, abs=1e-6) and hi == pytest.approx(3 + 1.963243, abs=1e-6)
    assert lo < mean < hi
    m90, lo90, hi90 = t_interval([1.0, 2.0, 3.0, 4.0, 5.0], level=0.90)
    assert lo < lo90 < m90 < hi90 < hi  # a lower level gives a narrower interval


def test_one_seed_bounds_nothing_and_no_seed_gives_nan():
    assert t_interval([0.4]) == (0.4, -math.inf, math.inf)
    assert all(math.isnan(v) for v in t_interval([]))
    assert all(math.isnan(v) for v in t_interval([0.1, math.nan]))
    assert not robust_pass({"margin": -math.inf, "cos_next": 0.9, "cos_anchor": 0.9})
    assert not robust_deploy({"r_at_5": math.nan, "mrr_at_10": 0.3})


def test_paired_difference_uses_the_spread_of_the_per_seed_differences():
    model, direct = [0.50, 0.62, 0.71], [0.40, 0.52, 0.61]  # seeds differ a lot; the gain over DIRECT does not
    assert difference(model, direct) == pytest.approx((0.1, 0.1, 0.1))
    unpaired_lo = t_interval(model)[1] - t_interval(direct)[0]
    assert unpaired_lo < 0.0  # compared unpaired, the same numbers would not show a gain
    shifted = difference(model, 0.2)  # a constant baseline (ridge): the model's interval, shifted
    assert shifted == pytest.approx(tuple(v - 0.2 for v in t_interval(model)))


def test_robust_checks_compare_lower_bounds_with_the_thresholds():
    assert robust_pass({"margin": 0.20, "cos_next": 0.45, "cos_anchor": 0.40})
    assert not robust_pass({"margin": 0.199, "cos_next": 0.9, "cos_anchor": 0.9})
    assert robust_deploy({"r_at_5": 0.10, "mrr_at_10": 0.05})
    assert not robust_deploy({"r_at_5": 0.30, "mrr_at_10": 0.049})


def test_new_seeds_skip_the_searchs_seeds():
    assert new_seeds({0, 2}, 3) == [1, 3, 4]
    assert new_seeds(set(), 2) == [0, 1]


def test_aggregate_counts_completed_seeds_and_gives_the_verdict_of_the_means():
    def row(seed, margin, status="completed", gate=None):
        return {"config_rank": 1, "source_trial": "t1", "seed": seed, "status": status, "gate": gate,
                "margin": margin, "cos_next": 0.5, "cos_anchor": 0.45, "r_at_5": 0.6 + seed / 100,
                "mrr_at_10": 0.3, "direct_r_at_5": 0.35 + seed / 100, "direct_mrr_at_10": 0.2}

    rows = pd.DataFrame([row(1, 0.30), row(2, 0.32, gate="margin"), row(3, 0.31), row(4, math.nan, "errored")])
    a = aggregate(rows, ridge={"r_at_5": 0.5, "mrr_at_10": 0.25}).iloc[0]
    assert (a["n"], a["seeds"], a["gated"]) == (3, 4, 1)
    assert a["margin"] == pytest.approx(0.31) and a["margin_lo"] < 0.31 < a["margin_hi"]
    assert a["r_at_5_minus_direct"] == pytest.approx(0.25) and a["r_at_5_minus_direct_lo"] == pytest.approx(0.25)
    assert a["verdict"] == "PASS" and a["robust_deploy"] and a["beats_ridge"]
    assert a["robust_pass"] == (a["margin_lo"] >= 0.20)  # cos_next and cos_anchor are constant and above PASS


# ------------------------------------------------------------------------------------------------ under Ray
def confirmed(exp):
    rows = pd.read_parquet(exp / "confirm.parquet")
    probe = json.loads((exp / "probe.json").read_text())
    return rows, aggregate(rows, probe["splits"]["val"]["baselines"]["ridge"])


def test_strong_direction_confirms_each_of_the_top_k_with_n_new_seeds_and_robust_deploy(tmp_path, strong_store):
    sp = space(tmp_path, SMALL + "  epochs: 2\n  margin: {grid: [0.07, 0.1]}\nscheduler: {name: fifo}\n"
                         "confirm: {top: 2, seeds: 3}\n")
    r = search("--space", sp, "--data", strong_store, "--storage", tmp_path, "--name", "strong", timeout=900)
    exp = tmp_path / "strong"
    rows, agg = confirmed(exp)
    ranked = pd.read_parquet(exp / "summary.parquet")
    assert sorted(rows["source_trial"].unique()) == sorted(ranked["trial_id"][:2])  # the top 2 of the ranking
    assert rows.groupby("source_trial")["seed"].apply(sorted).tolist() == [[1, 2, 3]] * 2  # search used seed 0
    assert (rows["status"] == "completed").all() and (rows["epoch"] == 2).all()
    assert {"margin", "cos_next", "cos_anchor", "r_at_5", "mrr_at_10", "direct_r_at_5", "direct_mrr_at_10",
            "gate", "config/margin"} <= set(rows.columns)
    assert len(agg) == 2 and agg["robust_deploy"].all() and (agg["n"] == 3).all()
    md = (exp / "summary.md").read_text()
    assert "## Confirmed" in md and "**Recommendation: rank " in md and "## Confirmed" in r.stdout
    assert len(list(exp.glob("*/result.json"))) == 2  # the confirmation trials live in confirm/, not beside them


def test_confirming_a_finished_search_survives_a_killed_driver_and_flat_data_never_passes(tmp_path, flat_store):
    epochs = 6
    sp = space(tmp_path, SMALL + f"  epochs: {epochs}\nscheduler: {{name: fifo}}\nconfirm: {{top: 0}}\n")
    search("--space", sp, "--data", flat_store, "--storage", tmp_path, "--name", "flat", timeout=900)
    exp = tmp_path / "flat"
    assert not (exp / "confirm").exists()
    ranked = pd.read_parquet(exp / "summary.parquet")
    assert ranked["status"].tolist() == ["gate_stopped"]  # the margin gate stopped the search's trial

    args = [sys.executable, SEARCH, "--num-cpus", 2, "--resume", "--name", "flat", "--storage", tmp_path,
            "--confirm-top", 1, "--confirm-seeds", 2]
    proc = subprocess.Popen(list(map(str, args)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not any(
                len(f.read_text().splitlines()) >= 2 for f in exp.glob("confirm/*/result.json")):
            time.sleep(0.3)
        assert list(exp.glob("confirm/*/result.json")), "the confirmation did not start before the deadline"
    finally:
        kill_driver(proc, exp)  # no cleanup
    assert not (exp / "confirm.parquet").exists(), "the confirmation had finished before the kill"

    r = run_cli(SEARCH, "--resume", "--name", "flat", "--storage", tmp_path, "--confirm-top", 2, timeout=120)
    assert r.returncode == 2 and "has started" in r.stderr and "\n" not in r.stderr.strip(), r.stderr
    search("--resume", "--name", "flat", "--storage", tmp_path, timeout=900)  # the stored settings: top 1 x 2 seeds
    rows, agg = confirmed(exp)
    assert rows["seed"].tolist() == [1, 2] and (rows["status"] == "completed").all()
    assert (rows["epoch"] == epochs).all() and (rows["gate"] == "margin").all()  # gates recorded, not enforced
    for f in exp.glob("confirm/*/result.json"):
        lines = [json.loads(line) for line in f.read_text().splitlines()]
        assert sorted({r["epoch"] for r in lines}) == list(range(1, epochs + 1))
        trained = [r["epoch"] for r in lines if not r.get("resumed")]
        assert len(trained) == len(set(trained))  # resumed from its checkpoint: no epoch trained twice
    assert not agg["robust_pass"].any() and not agg["robust_deploy"].any()
    assert "No configuration beats DIRECT" in (exp / "summary.md").read_text()


def test_bad_confirm_options_are_one_line_errors(tmp_path, small_store):
    r = run_cli(SEARCH, "--data", small_store, "--storage", tmp_path, "--confirm-seeds", 0, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == "error: --confirm-seeds: 0 is out of range (must be >= 1)"
    assert list(tmp_path.iterdir()) == []
