"""A search in the tools researchers use (issue 33): tracked in MLflow (a SQLite store, then a real `mlflow server`
on a loopback port), its Optuna study read by optuna-dashboard while trials run, and continued with 8 more trials
that start from the first 8. Two searches in all, shared by the tests (module-scoped)."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, run_cli
from local_processes import free_port, raylet_of, trial_workers
from test_search import SEARCH, refused, search

pytestmark = pytest.mark.usefixtures("ray_cluster")  # searches join the session's Ray node (conftest)
mlflow = pytest.importorskip("mlflow")  # the tracking extra (requirements-tracking.txt, in requirements-test.txt)

# 8 Optuna trials of 6 epochs on the strong store, 2 random before TPE; the margin gate stops those without warm-up
# at epoch 1 (PRUNED in Optuna). The search runs for several seconds after its first trials end: optuna-dashboard
# re-reads a study's trials at most every 2 s
SPACE = """
num_samples: 8
params: {d_model: 16, n_layers: 1, n_heads: 2, d_ff: 32, batch_size: 128, epochs: 6, warmup_epochs: {choice: [0, 6]},
         lr: {loguniform: [5.0e-4, 3.0e-3]}, margin: {choice: [0.05, 0.07]}}
gates: {drift: -1.0, margin: 2.0, grace_epochs: 0}
scheduler: {name: fifo}
confirm: {top: 1, seeds: 1}
search: {algorithm: optuna, seed: 1, n_startup_trials: 2}
"""


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"{url}: the server exited"
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer")


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and its workers, by the id we started
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def first(tmp_path_factory, strong_store, shared_ray):
    """The first search, tracked in the SQLite store in its folder; optuna-dashboard watches its journal while it
    runs (what it saw: ``seen``), and /proc its trial workers (``workers``: every one that started)."""
    root = tmp_path_factory.mktemp("tools")
    space = root / "space.yaml"
    space.write_text(SPACE)
    exp = root / "a"
    workers, done = set(), threading.Event()  # watched where the search joins the session's node (conftest)
    watcher = threading.Thread(target=trial_workers, args=(raylet_of(shared_ray["RAY_ADDRESS"]), workers, done),
                               daemon=True) if shared_ray else None
    if watcher:
        watcher.start()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **shared_ray}  # module-scoped: before ray_cluster sets them
    proc = subprocess.Popen([sys.executable, str(SEARCH), "--num-cpus", "2", "--space", str(space), "--data",
                             str(strong_store), "--storage", str(root), "--name", "a", "--no-probe", "--reuse-actors",
                             "--track", "mlflow"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    port, seen, dashboard = free_port(), [], None
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not (exp / "optuna_journal.log").exists():
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[0][-4000:]
        dashboard = subprocess.Popen([str(Path(sys.executable).parent / "optuna-dashboard"),
                                      str(exp / "optuna_journal.log"), "--host", "127.0.0.1", "--port", str(port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_http(f"http://127.0.0.1:{port}/api/studies", dashboard)
        while proc.poll() is None and time.time() < deadline:
            studies = get_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
            if studies:
                trials = get_json(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}")["trials"]
                states = [t["state"] for t in trials]
                seen.append(states)
                if "Running" in states and {"Complete", "Pruned"} & set(states):
                    break
            time.sleep(0.3)
        out = proc.communicate(timeout=600)[0]
    finally:
        done.set()
        if watcher:
            watcher.join()
        if dashboard:
            stop(dashboard)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-4000:]
    return {"root": root, "exp": exp, "space": space, "seen": seen, "store": strong_store,
            "workers": workers if watcher else None}


@pytest.fixture(scope="module")
def server(first):
    """A real `mlflow server` on a loopback port, on the first search's SQLite store (its tables exist already)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server",
                             "--backend-store-uri", f"sqlite:///{first['exp']}/mlflow.db",
                             "--artifacts-destination", str(first["root"] / "served"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def second(first, server, shared_ray):
    """8 more trials continuing the first 8, logged through the server."""
    search("--continue", first["exp"], "--num-samples", 8, "--storage", first["root"], "--name", "b", "--no-probe",
           "--reuse-actors", "--max-concurrent", 1,  # one worker runs the 8 short trials: a second one's start, saved
           "--confirm-top", 0, "--track", "mlflow", "--track-uri", server, env=shared_ray)
    return first["root"] / "b"


def handle(exp) -> dict:
    return json.loads((exp / "tracking.json").read_text())


def children(client, h: dict, kind: str):
    return client.search_runs([h["experiment_id"]], filter_string=(
        f"tags.`mlflow.parentRunId` = '{h['parent_run_id']}' and tags.`tune_p7.kind` = '{kind}'"))


def test_optuna_dashboard_shows_finished_trials_of_a_running_search(first):
    last = first["seen"][-1]
    assert "Running" in last and {"Complete", "Pruned"} & set(last), first["seen"]


def test_trials_as_short_as_a_workers_start_run_on_one_worker_per_cpu_and_none_is_thrown_away(first):
    """The first search's 8 Optuna trials last about as long as a worker's start; on 2 CPUs with reused workers
    (the default) two workers run all of them, and the confirmation's two runs one each: no other trial worker
    started. (Without a limit on live trials, tune_p7.tuning.algorithms.max_concurrent, Tune staged the next trial
    while both workers were busy and started a third worker for it, which it threw away when a running trial ended
    first: one after another, so that one worker ran every trial while the other CPU started workers.)"""
    if first["workers"] is None:
        pytest.skip("no session Ray node to watch (tests/cluster_harness.py shared_node could not start one)")

    def pids(folder):
        return {json.loads(line)["pid"] for f in folder.glob("*/result.json") for line in f.read_text().splitlines()}

    searched, confirmed = pids(first["exp"]), pids(first["exp"] / "confirm")
    assert len(searched) == 2 and len(confirmed) == 2, (searched, confirmed)
    assert first["workers"] == searched | confirmed, f"{len(first['workers'])} trial workers started"


def test_the_sqlite_store_holds_the_search_its_nested_trials_every_epoch_and_the_confirmation(first):
    h = handle(first["exp"])
    assert h["uri"] == f"sqlite:///{first['exp']}/mlflow.db"
    client = mlflow.MlflowClient(h["uri"])
    parent = client.get_run(h["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.info.run_name == "a"
    assert parent.data.params["space.lr"] == "loguniform [0.0005, 0.003]"
    assert parent.data.params["search.algorithm"] == "optuna" and parent.data.metrics["trials"] == 8
    ranked = pd.read_parquet(first["exp"] / "summary.parquet")
    trials = children(client, h, "trial")
    assert len(trials) == 8
    for run in trials:
        row = ranked[ranked["trial_id"] == run.data.tags["tune_p7.trial_id"]].iloc[0]
        history = client.get_metric_history(run.info.run_id, "margin")
        assert [m.step for m in history] == list(range(1, row["stopped_epoch"] + 1))  # every epoch, step = epoch
        assert history[-1].value == pytest.approx(row["margin"])
        assert run.data.tags["status"] == row["status"] and run.data.tags["rank"] == str(row["rank"])
        assert run.data.params["lr"] == str(row["config/lr"])
        if row["status"] == "gate_stopped":
            assert run.data.tags["gate"] == row["gate"] == "margin"
    assert {"gate_stopped", "completed"} <= {r.data.tags["status"] for r in trials}
    conf = pd.read_parquet(first["exp"] / "confirm.parquet")
    runs = children(client, h, "confirmation")  # one seed in each of the 2 cross-fitting folds
    assert sorted(r.data.metrics["margin"] for r in runs) == pytest.approx(sorted(conf["margin"])) and len(runs) == 2
    assert all(len(client.get_metric_history(r.info.run_id, "margin")) == 6 for r in runs)  # every epoch
    m = parent.data.metrics
    assert m["confirmed.1.margin_lo"] <= m["confirmed.1.margin"] <= m["confirmed.1.margin_hi"]
    assert "r_at_5_minus_direct" in " ".join(m) and "No configuration" in parent.data.tags["recommendation"]
    assert {"summary.html", "summary.md", "curves.png"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_a_continued_search_starts_from_the_first_trials_and_ranks_both(first, second):
    record = json.loads((second / "tune_p7_search.json").read_text())
    assert record["continues"] == str(first["exp"])
    df = pd.read_parquet(second / "summary.parquet")
    assert len(df) == 16 and df["rank"].tolist() == list(range(1, 17))
    assert df["experiment"].value_counts().to_dict() == {"a": 8, "b": 8}
    assert "continues a (8 trials)" in (second / "summary.md").read_text()
    import optuna  # the searcher's study, read back from the new search's journal

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(second / "optuna_journal.log")))
    trials = optuna.load_study(study_name="b", storage=storage).trials
    told = [t for t in trials if "continued_from" in t.user_attrs]
    assert len(trials) == 16 and [t.number for t in told] == list(range(8))  # told before its first suggestion
    first_df = df[df["experiment"] == "a"].set_index("trial_id")
    for t in told:
        row = first_df.loc[t.user_attrs["continued_from"]]
        assert t.params["lr"] == pytest.approx(row["config/lr"])
        if row["status"] == "completed":
            assert t.state.name == "COMPLETE" and t.value == pytest.approx(row["best_margin"])
        else:
            assert t.state.name == "PRUNED" and t.intermediate_values[1] == pytest.approx(row["margin"])


def test_the_continued_search_is_a_nested_parent_run_on_the_mlflow_server(first, second, server):
    h = handle(second)
    assert h["uri"] == server
    client = mlflow.MlflowClient(server)
    parent = client.get_run(h["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials"] == 16  # its summary ranks both
    assert parent.data.tags["tune_p7.continues_run"] == handle(first["exp"])["parent_run_id"]
    trials = children(client, h, "trial")
    assert len(trials) == 8
    for run in trials:
        epochs = [m.step for m in client.get_metric_history(run.info.run_id, "margin")]
        assert epochs == list(range(1, len(epochs) + 1)) and epochs and run.data.tags["status"]
    assert "summary.html" in {a.path for a in client.list_artifacts(parent.info.run_id)}


@pytest.mark.parametrize("change, words", [
    ("space", ["--space", "differs from the space"]),
    ("data", ["--data", "differs from the data"]),
    ("unfinished", ["--continue", "has not finished", "--resume"]),
])
def test_a_continue_that_cannot_learn_from_the_first_is_refused_in_one_line(first, tmp_path, change, words):
    target, extra = first["exp"], []
    if change == "space":
        other = tmp_path / "space.yaml"
        other.write_text(SPACE.replace("num_samples: 8", "num_samples: 9"))
        extra = ["--space", other]
    elif change == "data":
        extra = ["--data", REPO / "data" / "pydocs.parquet"]
    else:  # a copy of the first whose summary says a trial is unfinished
        target = tmp_path / "a"
        target.mkdir()
        for name in ("tune_p7_search.json", "space.yaml"):
            (target / name).write_bytes((first["exp"] / name).read_bytes())
        df = pd.read_parquet(first["exp"] / "summary.parquet")
        df.loc[0, "status"] = "unfinished"
        df.to_parquet(target / "summary.parquet")
    r = search("--continue", target, "--num-samples", 2, "--storage", tmp_path, "--name", "c", *extra, code=2,
               timeout=120)
    refused(r, words)
    assert not (tmp_path / "c").exists()


# a search in-process with the tracking extra hidden (as if not installed: importing it raises ImportError), then
# which of tune_p7's tracking modules it imported. With the extra installed, Ray Tune's fit() imports mlflow itself
# (its usage telemetry imports ray.air.integrations.mlflow, which imports mlflow when present): docs/tracking.md.
HIDDEN = """
import sys
sys.modules.update(mlflow=None, optuna_dashboard=None)
from tune_p7 import search
code = search.main(sys.argv[1:])
print("code", code, "imported", sorted(m for m in sys.modules if m.startswith("tune_p7") and "track" in m
                                       or m.endswith("mlflow_trials")))
"""


def test_a_search_without_the_extra_and_without_track_runs_and_imports_no_tracking_code(tmp_path, small_store):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE.replace("num_samples: 8", "num_samples: 1").replace("epochs: 6", "epochs: 1")
                     .replace("confirm: {top: 1, seeds: 1}", "confirm: {top: 0}").split("search:")[0])
    r = run_cli("-c", HIDDEN, "--space", space, "--data", small_store, "--storage", tmp_path, "--name", "n",
                "--no-probe", timeout=300)
    assert "code 0 imported ['tune_p7.space.tracking_settings']" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]


def test_track_without_mlflow_installed_is_one_line_exit_2_before_anything_starts(tmp_path, small_store):
    hide = "import sys; sys.modules['mlflow'] = None  # as if not installed: import mlflow raises ImportError\n"
    r = run_cli("-c", hide + "from tune_p7 import cli, search; cli.run(search.main)", "--data", small_store,
                "--storage", tmp_path, "--name", "t", "--track", "mlflow", timeout=120)
    refused(r, ["--track mlflow", "mlflow is not installed", "requirements-tracking.txt"])
    assert not (tmp_path / "t").exists()
