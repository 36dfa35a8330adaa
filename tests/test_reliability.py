"""Faults: a killed trial worker resumes exactly; a crash mid-write leaves nothing half-written; a torn
result line does not stop the summary; tune-p7 train, run alone, reproduces a trial."""
import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
import torch
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from ray import tune

from conftest import REPO, kill_driver, run_cli
from test_search import SEARCH, SMALL, results, search, space
from tune_p7.tuning import checkpoint

pytestmark = pytest.mark.usefixtures("ray_cluster")  # searches join the session's Ray node (conftest)


def test_killed_trial_worker_resumes_and_ends_where_an_uninterrupted_run_ends(tmp_path, strong_store):
    sp = space(tmp_path, SMALL + "  epochs: 6\n  seed: 7\nruns:\n  - {margin: 0.07}\nscheduler: {name: fifo}\n"
                                 "gates: {margin: -2.0}\n")
    args = [sys.executable, SEARCH, "--num-cpus", 2, "--space", sp, "--data", strong_store, "--storage", tmp_path,
            "--name", "kill", "--no-probe", "--no-plots"]
    exp = tmp_path / "kill"
    proc = subprocess.Popen(list(map(str, args)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=REPO, start_new_session=True)
    killed = None
    try:
        deadline = time.time() + 300
        while time.time() < deadline and killed is None:
            rows = next(iter(results(exp).values()), []) if exp.exists() else []
            if len(rows) >= 2 and rows[-1]["epoch"] < 6:
                killed = rows[-1]["pid"]
                os.kill(killed, signal.SIGKILL)  # the trial's worker process, mid-training
            time.sleep(0.2)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert killed is not None and proc.returncode == 0, out[-3000:]
    (trial_dir,) = [p for p in exp.iterdir() if p.name.startswith("train_trial")]
    rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    assert rows[-1]["epoch"] == 6 and rows[-1]["pid"] != killed
    df = pd.read_parquet(exp / "summary.parquet")
    assert df.loc[0, "status"] == "completed"
    # train the same trial alone, without Ray, on the trial's one thread
    cfg = tmp_path / "alone.json"
    cfg.write_text(json.dumps({**json.loads((trial_dir / "params.json").read_text())["run"],
                               **{k: v for k, v in json.loads((trial_dir / "params.json").read_text()).items()
                                  if k != "run"}, "threads": 1}))
    r = run_cli("-m", "tune_p7.train", "--config", cfg, "--data", strong_store)
    assert r.returncode == 0, r.stderr[-2000:]
    alone = [json.loads(line) for line in r.stdout.splitlines()]
    for key in ("margin", "cos_next", "cos_anchor", "r_at_5", "mrr_at_10", "loss"):
        assert alone[-1][key] == rows[-1][key], key


def test_a_killed_driver_resumed_leaves_no_trial_folder_that_tunes_state_does_not_know(tmp_path, strong_store):
    """A searcher that suggests each trial when a worker is free (Optuna, 2 at a time): a trial's folder appears in
    the storage with its first checkpoint, and Tune's state there lists the trial only from its next save (forced
    after num_to_keep checkpoints of a trial, else every 10 s or more). The driver is SIGKILLed while such a folder
    exists; the resumed search removes it (the searcher suggests a trial in its place) and ends with every trial
    complete and no folder that Tune's state does not list. By default the trials run on reused workers.

    The Optuna journal (what optuna-dashboard reads) recorded that trial's ask: it is told FAIL as interrupted, never
    left RUNNING; every other trial is COMPLETE, no configuration was suggested twice, and a trial that had finished
    before the kill did not run again."""
    trials = 5
    sp = space(tmp_path, SMALL.replace("  lr: 2.0e-3\n", "  lr: {loguniform: [1.0e-3, 3.0e-3]}\n") +
               f"  epochs: 2\nnum_samples: {trials}\nsearch: {{algorithm: optuna, seed: 0, n_startup_trials: 2}}\n"
               "scheduler: {name: fifo}\ngates: {margin: -2.0}\n"
               "checkpoints: {num_to_keep: 3}\n")  # no save forced by a trial's checkpoints: one every 10 s
    exp = tmp_path / "orphan"
    proc = subprocess.Popen([sys.executable, SEARCH, "--num-cpus", "2", "--space", sp, "--data", strong_store,
                             "--storage", tmp_path, "--name", "orphan", "--no-probe", "--no-plots",
                             "--max-concurrent", "2"],
                            stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "err", "wb"), cwd=REPO, start_new_session=True)

    def unlisted() -> set[str]:
        """Trial folders whose trial Tune's saved state does not list (none while the state is being rewritten)."""
        try:
            saved = [json.loads(f.read_text()) for f in exp.glob("experiment_state-*.json")]
        except (OSError, ValueError):
            return set()
        listed = {json.loads(t[0])["trial_id"] for state in saved for t in state["trial_data"]}
        return {d.name for d in exp.glob("train_trial_*") if saved and d.name.split("_")[2] not in listed}

    unknown, seen = set(), set()
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not unknown and proc.poll() is None:
            now = unlisted()
            unknown, seen = seen & now, now  # unlisted at two looks 0.1 s apart: no save in between
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            kill_driver(proc, exp)
    unknown = unlisted()
    assert unknown, "no trial ran that Tune's state did not list: " + (tmp_path / "err").read_text()[-2000:]
    finished = {os.path.basename(t.path): results(exp)[os.path.basename(t.path)]
                for t in tune.ExperimentAnalysis(str(exp)).trials if t.status == "TERMINATED"}
    r = search("--resume", "--name", "orphan", "--storage", tmp_path)
    assert all(f"removed {name}" in r.stdout for name in unknown), r.stdout[-2000:]
    known = {os.path.basename(t.path) for t in tune.ExperimentAnalysis(str(exp)).trials}
    assert {d.name for d in exp.glob("train_trial_*")} == known and len(known) == trials, known
    df = pd.read_parquet(exp / "summary.parquet")
    assert len(df) == trials and (df["status"] == "completed").all(), df[["trial_id", "status"]]
    assert df["config/lr"].is_unique  # nothing suggested twice
    after = results(exp)
    assert all(after[name] == rows for name, rows in finished.items())  # a finished trial did not run again
    journal = JournalStorage(JournalFileBackend(str(exp / "optuna_journal.log")))
    told = optuna.load_study(study_name="orphan", storage=journal).trials
    assert sum(t.state.name == "COMPLETE" for t in told) == trials
    lost = [t for t in told if t.state.name != "COMPLETE"]
    assert lost and all(t.state.name == "FAIL" and "interrupted" in t.user_attrs for t in lost), told


def test_a_crash_mid_checkpoint_write_never_leaves_a_partial_state(tmp_path):
    code = ("import sys, torch; from tune_p7.tuning import checkpoint; "
            "checkpoint.save(sys.argv[1], {'w': torch.randn(60_000_000)}, {'epoch': 1})")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)])
    deadline = time.time() + 60
    while time.time() < deadline and not (tmp_path / "state.pt.tmp").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "state.pt.tmp").exists(), "the kill came too late to test anything"
    assert not (tmp_path / "state.pt").exists()  # the real name only ever holds a whole file
    checkpoint.save(tmp_path, {"w": torch.ones(3)}, {"epoch": 2})  # the next save still works
    assert torch.equal(checkpoint.load(tmp_path)["w"], torch.ones(3))
    assert checkpoint.load_metrics(tmp_path)["epoch"] == 2


def test_resume_goes_on_from_the_newest_loadable_checkpoint(tmp_path):
    """Tune's saved state can name an older checkpoint than the trial had stored when the driver died: the trial
    goes on from the newest whole one that loads, and gets the results of every stored epoch from the named one on
    (a half-copied state.pt is passed over)."""
    import pyarrow.fs as pafs

    for epoch in range(1, 5):
        folder = tmp_path / f"checkpoint_{epoch - 1:06d}"
        folder.mkdir()
        checkpoint.save(folder, {"epoch": epoch, "w": torch.full((4,), float(epoch))}, {"epoch": epoch})
    (tmp_path / "checkpoint_000004").mkdir()  # a folder the kill left empty
    fs, named = pafs.LocalFileSystem(), str(tmp_path / "checkpoint_000001")  # epoch 2
    state, metrics = checkpoint.resume_from(fs, named)
    assert state["epoch"] == 4 and torch.equal(state["w"], torch.full((4,), 4.0))
    assert [m["epoch"] for m in metrics] == [2, 3, 4]
    (tmp_path / "checkpoint_000003" / checkpoint.STATE).write_bytes(b"PK\x03\x04 cut short")
    state, metrics = checkpoint.resume_from(fs, named)
    assert state["epoch"] == 3 and [m["epoch"] for m in metrics] == [2, 3]


def test_a_trial_started_without_a_checkpoint_goes_on_from_the_newest_lineage_it_stored(tmp_path):
    """The checkpoints a trial stored that Tune's state never recorded: its own, of its newest lineage, from the
    oldest (resume_from then goes on from the newest and reports each again); another trial's are not its own."""
    import pyarrow.fs as pafs

    fs = pafs.LocalFileSystem()
    assert checkpoint.unregistered(fs, str(tmp_path / "none"), "t1") is None
    for n, (trial, lineage, epoch) in enumerate([("t0", "X", 3), ("t1", "A", 1), ("t1", "A", 2), ("t1", "B", 2),
                                                 ("t1", "B", 3)]):
        folder = tmp_path / f"checkpoint_{n:06d}"
        folder.mkdir()
        checkpoint.save(folder, {"epoch": epoch}, {"epoch": epoch, "lineage": lineage, "trial_id": trial})
    assert checkpoint.unregistered(fs, str(tmp_path), "t1") == str(tmp_path / "checkpoint_000003")
    assert checkpoint.unregistered(fs, str(tmp_path), "t2") is None


KILL_AT_FIRST_RESULT = """
import os, signal, sys
from pathlib import Path
import ray
from ray import tune
from tune_p7.data.loading import load
from tune_p7.search import build_tuner
from tune_p7.search_options import parse
from tune_p7.space.file import load_space

class KillAtFirstResult(tune.Callback):
    # the first result reached the driver: its checkpoint is stored, Tune has not registered it yet
    def on_trial_result(self, iteration, trials, trial, result, **info):
        if not Path(sys.argv[3], "killed").exists():  # Tune restores its callbacks with the experiment
            Path(sys.argv[3], "killed").touch()
            os.kill(os.getpid(), signal.SIGKILL)

space_path, data, root, resume = sys.argv[1:]
opts = parse(["--resume"] if resume == "1" else [])
ray.init()  # the session's node ($RAY_ADDRESS), else a local one
build_tuner(load_space(space_path), load(data), opts, root, "unreg", callbacks=(KillAtFirstResult(),)).fit()
"""


@pytest.mark.parametrize("cut", [False, True], ids=["whole", "cut-short"])
def test_a_trial_whose_checkpoint_tunes_state_never_recorded_trains_no_epoch_twice(tmp_path, small_store, cut):
    """The driver dies after a trial stored its first checkpoint and before Tune's state recorded it: the resumed
    trial goes on from that checkpoint (epoch 1 reported again, marked ``resumed``) instead of training it twice;
    one the kill cut short does not load, and the trial trains from scratch. Either way the old folders go: every
    checkpoint left is one of the resumed run's, whole."""
    sp = space(tmp_path, "params: {d_model: 16, n_layers: 1, n_heads: 2, d_ff: 32, batch_size: 128, epochs: 3}\n"
                         "scheduler: {name: fifo}\ngates: {margin: -2.0}\n")
    script = tmp_path / "kill.py"
    script.write_text(KILL_AT_FIRST_RESULT)
    killed = run_cli(script, sp, small_store, tmp_path, 0)
    assert killed.returncode == -signal.SIGKILL and (tmp_path / "killed").exists(), killed.stderr[-2000:]
    (trial,) = (tmp_path / "unreg").glob("train_trial_*")
    stored = list(trial.glob("checkpoint_*"))
    assert stored, "no stored checkpoint before the kill"
    if cut:
        for folder in stored:
            (folder / checkpoint.STATE).write_bytes(b"PK\x03\x04 cut short")
    resumed = run_cli(script, sp, small_store, tmp_path, 1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
    trained = [r["epoch"] for r in rows if not r.get("resumed")]
    first = [1] if rows[0]["epoch"] == 1 and not rows[0].get("resumed") else []  # the killed run's line, if kept
    assert trained == first + ([1, 2, 3] if cut else [2, 3]), [(r["epoch"], r.get("resumed")) for r in rows]
    assert [r["epoch"] for r in rows if r.get("resumed")] == ([] if cut else [1])
    left = sorted(trial.glob("checkpoint_*"))
    assert left and all(checkpoint.load(f)["epoch"] == checkpoint.load_metrics(f)["epoch"] for f in left)
    assert cut or all(checkpoint.load_metrics(f)["epoch"] >= 2 for f in left)  # epoch 1's old folder is gone


def test_checkpoints_load_without_executing_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"x": Evil()}, tmp_path / "state.pt")
    with pytest.raises(Exception, match="[Ww]eights only"):
        checkpoint.load(tmp_path)
