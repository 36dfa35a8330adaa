"""End to end under real Ray (the session's node, or a local Ray of its own): python tune_p7/search.py, its gates,
errors, resume and summary."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from ray import tune

from conftest import REPO, kill_when, run_cli
from tune_p7.data.store import write_store
from tune_p7.data.synth import generate

pytestmark = pytest.mark.usefixtures("ray_cluster")  # searches join the session's Ray node (conftest)

SEARCH = REPO / "tune_p7" / "search.py"
EVERY_EPOCH = {"cos_next", "cos_prev", "margin", "cos_anchor", "train_margin", "r_at_1", "r_at_5", "r_at_10",
               "mrr_at_10", "direct_r_at_5", "direct_mrr_at_10", "centroid_r_at_5", "anchor_lambda", "loss",
               "loss_rank", "loss_margin", "loss_teacher", "gate", "node", "r_at_1_xctx", "mrr_at_10_xctx",
               "direct_r_at_5_xctx", "centroid_mrr_at_10_xctx", "loss_rank_weighted"}
SUMMARY_COLUMNS = {"trial_id", "status", "gate", "stopped_epoch", "verdict", "deploy_ok", "rank", "node",
                   "config/arch", "config/margin", "margin", "cos_next", "r_at_5", "direct_r_at_5"}


def search(*args, timeout=600, code=0, env=None, plots=False):
    """search.py on 2 CPUs; without its plots unless the test reads them (drawing is 1-1.5 CPU-s a search, and
    the suite's searches share two cores)."""
    r = run_cli(SEARCH, "--num-cpus", 2, *([] if plots else ["--no-plots"]), *args, timeout=timeout, env=env or {})
    assert r.returncode == code, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def refused(r: subprocess.CompletedProcess, words) -> None:
    """Bad input: exit code 2 and one line on stderr holding every one of ``words``, no traceback."""
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    err = r.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in r.stderr, err
    for w in words:
        assert w in err, err


# Ray's prefix of a worker's forwarded output: "(pid=…)", "(ClassName pid=…)" or a trial actor's Repr
# ("(trial 1419f_00000 margin=0.07 pid=…)", tune_p7.tuning.actors), then ", ip=…" on another node
WORKER_LINE = re.compile(r"\((?:[^()\n]* )?pid=\d+(?:, ip=[\d.]+)?\)")


def assert_clean_console(r: subprocess.CompletedProcess) -> None:
    """No traceback anywhere, no line of a Ray worker (its exit's `SystemExit` traceback, Tune's "Checkpoint
    successfully created" after every epoch: they reach the console only with --verbose), and the ranked table is
    the last thing on stdout (no late Ray log line after it)."""
    both = r.stdout + r.stderr
    assert "Traceback" not in both and "SystemExit" not in both, both[-3000:]
    assert not WORKER_LINE.search(both) and "Checkpoint successfully created" not in both, both[-3000:]
    lines = [line for line in r.stdout.splitlines() if line.strip()]
    table = max(i for i, line in enumerate(lines) if line.startswith("| rank |"))
    assert lines[table - 1].startswith("summary: ") or lines[table - 2].startswith("summary: "), lines[-12:]
    assert all(line.startswith("|") for line in lines[table:]), lines[table:]


def files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(f): (f.stat().st_size, f.stat().st_mtime_ns) for f in root.rglob("*")}


def results(exp: Path) -> dict[str, list[dict]]:
    out = {}
    for f in exp.glob("*/result.json"):
        out[f.parent.name] = [json.loads(line) for line in f.read_text().splitlines()]
    return out


def space(tmp_path, text) -> Path:
    """A space file; one without a confirm section confirms nothing (the stage's trials would dominate these tests;
    tests/tuning/test_confirm.py tests it)."""
    path = tmp_path / "space.yaml"
    path.write_text(text + ("" if "\nconfirm:" in text else "confirm: {top: 0}\n"))
    return path


SMALL = """
params:
  d_model: 64
  n_layers: 2
  n_heads: 4
  d_ff: 128
  lstm_layers: 1
  warmup_epochs: 1
  batch_size: 128
  lr: 2.0e-3
"""


def test_smoke_search_runs_gates_asha_ranks_pass_first_and_ends_with_the_table(tmp_path, strong_store):
    r = search("--data", strong_store, "--storage", tmp_path, "--name", "smoke", "--max-concurrent", 1,
               "--confirm-top", 0,  # the README test below runs the default space's confirmation
               "--reuse-actors", plots=True)  # four trials one after another: one worker start, not four
    assert_clean_console(r)
    exp = tmp_path / "smoke"
    joined = bool(os.environ.get("RAY_ADDRESS"))  # the session's node, which has no dashboard (cluster_harness)
    assert ("  dashboard: (not available)\n" if joined else "  dashboard: http://127.0.0.1:") in r.stdout
    res = results(exp)
    assert len(res) == 4
    for rows in res.values():
        assert [row["epoch"] for row in rows] == list(range(1, len(rows) + 1))
        for row in rows:
            assert EVERY_EPOCH <= set(row), EVERY_EPOCH - set(row)
    df = pd.read_parquet(exp / "summary.parquet")
    assert SUMMARY_COLUMNS <= set(df.columns)
    assert len(df) == 4 and df["rank"].tolist() == [1, 2, 3, 4]
    assert (df["status"] == "asha_stopped").sum() >= 1  # trials run one at a time: the LSTMs lose at rung 1
    assert df.iloc[0]["verdict"] == "PASS" and df.iloc[0]["status"] == "completed"
    md = (exp / "summary.md").read_text()
    assert "| rank |" in md and (exp / "curves.png").stat().st_size > 1000
    assert "| 1 |" in r.stdout  # the ranked table is printed


def test_drift_gate_stops_trials_and_the_summary_says_when(tmp_path, strong_store):
    sp = space(tmp_path, SMALL + "  epochs: 3\n  margin: {grid: [0.07, 0.1]}\ngates: {drift: 0.99}\n")
    r = search("--space", sp, "--data", strong_store, "--storage", tmp_path, "--name", "drift", "--verbose",
               "--reuse-actors", "--max-concurrent", 1, "--no-probe")  # one worker for both trials; no probe read
    both = r.stdout + r.stderr  # --verbose brings back what assert_clean_console keeps off the console
    assert WORKER_LINE.search(both) and "Checkpoint successfully created" in both, both[-3000:]
    df = pd.read_parquet(tmp_path / "drift" / "summary.parquet")
    assert (df["status"] == "gate_stopped").all() and (df["gate"] == "drift").all()
    assert (df["stopped_epoch"] == 1).all()
    assert "gate_stopped (drift)" in (tmp_path / "drift" / "summary.md").read_text()


def test_oracle_warnings_come_before_the_trials_and_the_escape_gate_stops_them(tmp_path):
    """Great-circle articles whose next chunk lies opposite its context centroid: the probe's warning that the
    verdict fails even the true next chunk is printed (and stored) before the trials; the escape gate (cos_next
    and cos_prev both < 0.99) stops every trial in its first epoch."""
    art, idx, vec = generate(60, 12, 16, 1.0, seed=0, rho=10.0, sigma=0.1, tau=0.05)
    store = tmp_path / "circles.parquet"
    write_store(store, art, idx, vec, dtype="float32")
    sp = space(tmp_path, SMALL + "  epochs: 2\nscheduler: {name: fifo}\ngates: {drift: -1.0, escape: 0.99}\n")
    r = search("--space", sp, "--data", store, "--storage", tmp_path, "--name", "esc")
    exp = tmp_path / "esc"
    printed = [line for line in r.stderr.splitlines() if line.startswith("warning: on ")]
    assert printed == json.loads((exp / "probe.json").read_text())["warnings"]
    assert any(w.startswith("warning: on val the true next chunk itself gets verdict FAIL") for w in printed)
    assert not any("drift gate" in w for w in printed)  # drift -1.0 cannot stop it
    df = pd.read_parquet(exp / "summary.parquet")
    assert len(df) == 1 and df.iloc[0]["status"] == "gate_stopped"
    assert df.iloc[0]["gate"] == "escape" and df.iloc[0]["stopped_epoch"] == 1


def test_a_nan_trial_errors_alone_with_its_reason(tmp_path, small_store):
    sp = space(tmp_path, SMALL + "  epochs: 2\nruns:\n  - {lr: 1.0e+12, grad_clip: 1.0e+12}\n  - {lr: 2.0e-3}\n"
               "scheduler: {name: fifo}\n")
    r = search("--space", sp, "--data", small_store, "--storage", tmp_path, "--name", "nan", "--max-concurrent", 1,
               "--no-probe", code=1)  # one worker for both runs; no probe read
    assert "error: 1 of 2 trials errored (see summary.md, Errors)" in r.stderr.splitlines(), r.stderr[-2000:]
    assert "| 1 |" in r.stdout and "## Errors" in (tmp_path / "nan" / "summary.md").read_text()  # summary first
    assert_clean_console(r)
    df = pd.read_parquet(tmp_path / "nan" / "summary.parquet").set_index("config/lr")
    assert df.loc[1e12, "status"] == "errored" and "loss became nan" in df.loc[1e12, "error"]
    assert df.loc[2e-3, "status"] == "completed" and df.loc[2e-3, "stopped_epoch"] == 2


def test_killed_driver_resumes_from_checkpoints(tmp_path, strong_store):
    epochs = 6  # long enough that the kill (right after epoch 3 of two trials) lands mid-search
    sp = space(tmp_path, SMALL + f"  epochs: {epochs}\n"
               + "  margin: {grid: [0.05, 0.07, 0.1]}\nscheduler: {name: fifo}\ngates: {margin: -2.0}\n")
    args = [sys.executable, SEARCH, "--num-cpus", 2, "--space", sp, "--data", strong_store, "--storage", tmp_path,
            "--name", "res", "--reuse-actors", "--no-plots"]  # the actors' names are tests/test_dashboard.py's
    exp = tmp_path / "res"
    kill_when(args, exp, "checkpoint_000002", settle=0.5)
    before = {k: [r["epoch"] for r in v] for k, v in results(exp).items()}
    assert any(len(e) < epochs for e in before.values()), "the search had finished before the kill"
    # the race a kill can hit: Tune deleted the checkpoint its last saved state names (num_to_keep) after a
    # newer one was registered; resume must go on from the newer one, not fail the trial
    unfinished = [t for t in tune.ExperimentAnalysis(str(exp)).trials
                  if t.checkpoint and len(before[Path(t.path).name]) < epochs]
    named = Path(unfinished[0].checkpoint.path)
    later = sorted(p for p in named.parent.glob("checkpoint_*") if p.name > named.name)
    if named.exists():  # else the kill hit the race by itself; either way the test always resumes through it
        if later:
            shutil.rmtree(named)
        else:
            os.rename(named, named.with_name(f"checkpoint_{int(named.name.rsplit('_', 1)[1]) + 1:06d}"))
    assert not named.exists() and any(p.name > named.name for p in named.parent.glob("checkpoint_*"))
    # the same --space and --data as recorded are no change: accepted
    r = search("--resume", "--name", "res", "--storage", tmp_path, "--space", sp, "--data", strong_store,
               "--reuse-actors")
    assert f"trial {unfinished[0].trial_id}: Tune's state named a deleted checkpoint" in r.stdout
    after = results(exp)
    df = pd.read_parquet(exp / "summary.parquet")
    assert len(df) == 3 and df["trial_id"].is_unique and len(after) == 3
    assert (df["status"] == "completed").all()
    for name, rows in after.items():
        seen = [r["epoch"] for r in rows]
        assert sorted(set(seen)) == list(range(1, epochs + 1))
        # a restored trial first reports its stored checkpoints' results again (``resumed``): lines the kill lost
        trained = [r["epoch"] for r in rows if not r.get("resumed")]
        assert len(trained) == len(set(trained)), seen  # no epoch trained twice
        # a restored trial keeps the precision the driver decided (it is in its config)
        used = json.loads((exp / "tune_p7_search.json").read_text())["precision"]["used"]
        assert {r["bf16"] for r in rows} == {used == "bf16"}, (used, {r["bf16"] for r in rows})


@pytest.fixture(scope="module")
def auto(tmp_path_factory, small_store, shared_ray):
    """A finished search of two 1-epoch trials with precision: auto."""
    root = tmp_path_factory.mktemp("auto")
    sp = space(root, SMALL + "  epochs: 1\n  precision: auto\n  margin: {grid: [0.07, 0.1]}\n"
               "scheduler: {name: fifo}\n")
    r = search("--space", sp, "--data", small_store, "--storage", root / "results", "--name", "auto", "--no-probe",
               "--max-concurrent", 1, env=shared_ray)  # one worker for both trials
    return {"root": root / "results", "exp": root / "results" / "auto", "space": sp, "run": r}


def test_precision_auto_is_decided_once_by_the_driver_and_recorded(auto):
    record = json.loads((auto["exp"] / "tune_p7_search.json").read_text())
    used = record["precision"]["used"]
    assert record["precision"] == {"requested": "auto", "used": used} and used in ("bf16", "fp32")
    params = [json.loads(f.read_text()) for f in auto["exp"].glob("*/params.json")]
    assert len(params) == 2 and [p["precision"] for p in params] == [used, used]
    assert all(row["bf16"] == (used == "bf16") for rows in results(auto["exp"]).values() for row in rows)
    assert auto["run"].returncode == 0  # every trial ended


@pytest.mark.parametrize("option", [["--epochs", "3"], ["--seed", "1"], ["--scheduler", "asha"], ["--space", "smoke"],
                                    ["--data", "other"]])
def test_resume_refuses_options_the_stored_experiment_cannot_honour(auto, flat_store, option):
    flag, value = option
    value = {"smoke": REPO / "search_spaces" / "smoke.yaml", "other": flat_store}.get(value, value)
    before = files(auto["root"])
    r = run_cli(SEARCH, "--resume", "--name", "auto", "--storage", auto["root"], flag, value, timeout=120)
    refused(r, [flag, "--resume"])
    assert files(auto["root"]) == before  # nothing written


@pytest.mark.parametrize("args, words", [
    (["--space", "search_spaces/nope.yaml"], ["nope.yaml", "no such search-space file"]),
    (["--data", "/nonexistent/x.parquet"], ["x.parquet", "no such file"]),
    (["--resume", "--name", "never-ran"], ["never-ran", "no experiment to resume"]),
    (["--address", "127.0.0.1:1"], ["--address 127.0.0.1:1", "cannot reach"]),
    (["--epochs", "0"], ["--epochs", "out of range"]),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, small_store, args, words):
    store = tmp_path / "results"
    store.mkdir()
    r = run_cli(SEARCH, "--data", small_store, "--storage", store, "--name", "x", *args, timeout=120)
    refused(r, words)
    assert list(store.iterdir()) == []


@pytest.mark.parametrize("text, args, words", [
    ("  n_heads: {grid: [8, 6]}\n", [], ["key 'n_heads'", "d_model 64 is not divisible by n_heads 6"]),
    ("  epochs: 1\n", [], ["'scheduler.grace_period' 2", "'epochs' 1"]),
    ("  epochs: 3\n", ["--epochs", "1"], ["'scheduler.grace_period' 2", "(with --epochs 1)"]),
])
def test_a_space_that_cannot_run_is_refused_before_anything_starts(tmp_path, small_store, text, args, words):
    sp = space(tmp_path, SMALL + text)
    store = tmp_path / "results"
    store.mkdir()
    r = run_cli(SEARCH, "--space", sp, "--data", small_store, "--storage", store, *args, timeout=120)
    refused(r, [f"error: {sp}: ", *words])
    assert list(store.iterdir()) == []


@pytest.mark.parametrize("text", ["  n_heads: 6\n", "  context_length: 30\n"])  # the space; then the loaded data
def test_bad_input_is_refused_before_torch_or_ray_is_imported(tmp_path, small_store, text):
    """Checking the options, the space and the data needs neither (importing them takes 2-3 s on 2 cores)."""
    prog = ("import atexit, runpy, sys\n"
            "atexit.register(lambda: print(sorted(m for m in ('torch', 'ray') if m in sys.modules)))\n"
            f"sys.argv = ['search.py'] + sys.argv[1:]\nrunpy.run_path({str(SEARCH)!r}, run_name='__main__')\n")
    r = run_cli("-c", prog, "--space", space(tmp_path, SMALL + text), "--data", small_store, "--storage",
                tmp_path / "out", timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: "), r.stderr
    assert r.stdout.strip() == "[]", r.stdout


def test_context_length_the_npz_lacks_is_refused(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    for name in ("train", "val"):
        np.savez(tmp_path / f"{name}.npz", contexts=rng.standard_normal((20, 3, 8)).astype(np.float32),
                 targets=rng.standard_normal((20, 8)).astype(np.float32))
    sp = space(tmp_path, SMALL + "  context_length: {grid: [3, 5]}\n")
    r = run_cli(SEARCH, "--space", sp, "--data", tmp_path / "train.npz", "--storage", tmp_path / "out", timeout=120)
    assert r.returncode == 2 and "context length 5" in r.stderr and "train.npz" in r.stderr


def test_unwritable_storage(tmp_path, small_store):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run_cli(SEARCH, "--data", small_store, "--storage", blocker / "sub", timeout=120)
    assert r.returncode == 2 and "not writable" in r.stderr and "Traceback" not in r.stderr


def test_full_storage_is_refused(tmp_path, small_store):
    mnt = tmp_path / "full"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
    try:
        r = run_cli(SEARCH, "--data", small_store, "--storage", mnt, timeout=120)
        assert r.returncode == 2 and "storage is full" in r.stderr and str(mnt) in r.stderr, r.stderr
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_unknown_data_format(tmp_path):
    bad = tmp_path / "vectors.csv"
    bad.write_text("1,2,3\n")
    r = run_cli(SEARCH, "--data", bad, "--storage", tmp_path / "out", timeout=120)
    assert r.returncode == 2 and "vectors.csv: unknown data format" in r.stderr
