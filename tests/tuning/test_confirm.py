"""The confirmation stage: real confirmation runs under Ray, scored on the held-out split (its statistics on
hand-made tables: tests/report/test_conclusions.py)."""
import json
import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import REPO, kill_driver, run_cli
from test_search import SMALL, assert_clean_console, search, space  # the small model's space text, search.py under Ray
from tune_p7.data import folds
from tune_p7.data.loading import load
from tune_p7.report.conclusions import aggregate
from tune_p7.tuning.confirm import new_seeds

pytestmark = pytest.mark.usefixtures("ray_cluster")  # searches join the session's Ray node (conftest)

SEARCH = REPO / "tune_p7" / "search.py"


def test_new_seeds_skip_the_searchs_seeds():
    assert new_seeds({0, 2}, 3) == [1, 3, 4]
    assert new_seeds(set(), 2) == [0, 1]


# ------------------------------------------------------------------------------------------------ under Ray
def confirmed(exp):
    rows = pd.read_parquet(exp / "confirm.parquet")
    return rows, aggregate(rows, pd.read_parquet(exp / "confirm_articles.parquet"))


def test_strong_direction_confirms_each_of_the_top_k_by_cross_fitting_and_robust_deploy(tmp_path, strong_store):
    sp = space(tmp_path, SMALL + "  epochs: 2\n  context_length: {grid: [3, 5]}\nscheduler: {name: fifo}\n"
                         "confirm: {top: 2, seeds: 1, folds: 2}\n")
    r = search("--space", sp, "--data", strong_store, "--storage", tmp_path, "--name", "strong", "--reuse-actors",
               "--max-concurrent", 1, timeout=900)  # the search's and the confirmation's trials reuse one worker each
    exp = tmp_path / "strong"
    rows, agg = confirmed(exp)
    ranked = pd.read_parquet(exp / "summary.parquet")
    assert sorted(rows["source_trial"].unique()) == sorted(ranked["trial_id"][:2])  # the top 2 of the ranking
    assert rows.groupby("source_trial")["fold"].apply(sorted).tolist() == [[0, 1]] * 2
    assert (rows["seed"] == 1).all()  # the search used seed 0
    assert (rows["status"] == "completed").all() and (rows["epoch"] == 2).all()
    pids = {json.loads(f.read_text().splitlines()[0])["pid"] for f in exp.glob("confirm/*/result.json")}
    assert len(pids) < len(rows) == 4  # --reuse-actors: the four runs ran in fewer worker processes
    assert {"margin", "cos_next", "cos_anchor", "r_at_5", "mrr_at_10", "direct_r_at_5", "direct_mrr_at_10",
            "gate", "config/context_length"} <= set(rows.columns)
    # every train and ood article scored once, by the fold that trained without it, on the windows of the
    # largest context length (5) for both configurations; ridge on the same windows
    articles = pd.read_parquet(exp / "confirm_articles.parquet")
    data = load(strong_store)
    pool = folds.pool(data)
    common = folds.window_mask(pool, 3, 5).sum()
    assert common == len(pool.windows(5))
    for rank, g in articles[articles["split"] == folds.HELDOUT].groupby("config_rank"):
        ridge, model = g[g["source"] == "ridge"], g[g["source"] == "model"]
        assert sorted(ridge["article"]) == list(range(len(pool.offsets) - 1)) and ridge["count"].sum() == common
        assert sorted(model["article"]) == sorted(ridge["article"]) and model["count"].sum() == common
        for fold, part in model.groupby("fold"):
            _, ids = folds.fold_data(data, int(fold), 2, 0)
            assert sorted(part["article"]) == sorted(ids)
    assert len(agg) == 2 and agg["robust_deploy"].all() and (agg["n"] == 2).all()
    assert (agg["articles"] == len(pool.offsets) - 1).all()
    md = (exp / "summary.md").read_text()
    assert "## Confirmed" in md and "**Recommendation: rank " in md and "## Confirmed" in r.stdout
    assert "scored on every train and held-out article" in md and "at context length 5" in md
    assert len(list(exp.glob("*/result.json"))) == 2  # the confirmation trials live in confirm/, not beside them


def test_confirming_a_finished_search_survives_a_killed_driver_and_flat_data_never_passes(tmp_path, flat_store):
    epochs = 6
    sp = space(tmp_path, SMALL + f"  epochs: {epochs}\nscheduler: {{name: fifo}}\nconfirm: {{top: 0}}\n")
    search("--space", sp, "--data", flat_store, "--storage", tmp_path, "--name", "flat", "--reuse-actors", "--no-probe",
           timeout=900)  # the verdict on DIRECT below is the confirmation's (report.conclusions), not the probe's
    exp = tmp_path / "flat"
    assert not (exp / "confirm").exists()
    ranked = pd.read_parquet(exp / "summary.parquet")
    assert ranked["status"].tolist() == ["gate_stopped"]  # the margin gate stopped the search's trial

    args = [sys.executable, SEARCH, "--num-cpus", 2, "--resume", "--name", "flat", "--storage", tmp_path,
            "--confirm-top", 1, "--confirm-seeds", 1, "--no-plots"]
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
    r = search("--resume", "--name", "flat", "--storage", tmp_path, timeout=900)  # the stored: 1 x 1 seed x 2 folds
    assert_clean_console(r)  # no traceback, no worker line, the ranked table last
    assert "Failed to fetch metrics" not in r.stdout + r.stderr and "Error handling checkpoint" not in r.stderr
    rows, agg = confirmed(exp)
    assert rows["seed"].tolist() == [1, 1] and rows["fold"].tolist() == [0, 1]
    assert (rows["status"] == "completed").all()
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


def test_ctrl_c_during_the_search_stops_before_any_confirmation_and_resume_confirms(tmp_path, strong_store):
    """Ctrl-C ends Tune's run with its state saved and fit() returns: the driver must not choose configurations
    from the unfinished search. It says how to go on and exits 130; --resume finishes the search, then confirms."""
    import os
    import signal

    sp = space(tmp_path, SMALL + "  epochs: 4\n  margin: {grid: [0.07, 0.1]}\nscheduler: {name: fifo}\n"
                         "gates: {margin: -2.0}\nconfirm: {top: 1, seeds: 1}\n")
    args = [sys.executable, SEARCH, "--num-cpus", 2, "--space", sp, "--data", strong_store, "--storage", tmp_path,
            "--name", "int", "--no-plots"]
    exp = tmp_path / "int"
    proc = subprocess.Popen(list(map(str, args)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(exp.glob("*/checkpoint_000001")):
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    assert "Traceback" not in out + err and "interrupted: " in err and "--resume --name int" in err, err[-2000:]
    assert not (exp / "confirm").exists() and "configs" not in json.loads((exp / "confirm.json").read_text())
    r = search("--resume", "--name", "int", "--storage", tmp_path, timeout=900)
    assert_clean_console(r)
    rows, agg = confirmed(exp)
    assert len(rows) == 2 and (rows["status"] == "completed").all() and (rows["epoch"] == 4).all()
