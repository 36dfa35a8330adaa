"""A real two-node Ray cluster on this machine (scripts/cluster_head.sh and cluster_worker.sh), moto's S3 server,
and `python tune_p7/search.py --address ...` or scripts/cluster_submit.sh as the driver: where a search listens,
that it uses both nodes and S3, what it refuses, and that trials survive a dead node. Everything stays on
loopback, in private folders, with this run's own ports and token (tests/cluster_harness.py)."""
from __future__ import annotations

import json
import secrets

import pytest
import yaml

from cluster_harness import (BUCKET, NODE_IP, SMOKE, driver, finish, http_get, kill_node, private_env, private_workdir,
                             refused, s3_keys, s3_read, s3_results, s3_server, script, summary, synth,
                             two_node_cluster)
from local_processes import listeners_of, listening_hosts, process_tree, stop, wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def workdir():
    with private_workdir() as path:
        yield path


@pytest.fixture(scope="module")
def store(workdir):
    return synth(workdir / "synth.parquet", 120)


@pytest.fixture(scope="module")
def slower_store(workdir):
    """Trials of a few seconds: longer than starting a trial actor on a node (so the head node cannot run all
    trials before the worker node's actor is up) and long enough to kill a node in mid-trial."""
    return synth(workdir / "slower.parquet", 400)


@pytest.fixture(scope="module")
def base_env():
    return private_env()


@pytest.fixture(scope="module")
def s3(workdir, base_env):
    pytest.importorskip("moto.server")
    with s3_server(workdir, base_env) as server:
        yield server


@pytest.fixture(scope="module")
def cluster(s3, workdir):
    env, _ = s3
    with two_node_cluster(env, workdir) as c:
        yield c


# ---------------------------------------------------------------- tests (the node-killing one runs last)

def test_local_search_listens_on_loopback_only(workdir, store, base_env):
    """A plain local search (no --address) listens on loopback only: every TCP server of its Ray (GCS, raylet,
    dashboard, agents, trial workers) while trials run, the dashboard included, which wants the token."""
    env = {**base_env, "RAY_TMPDIR": str(workdir / "local")}  # its own /tmp/ray, nobody else's session
    (workdir / "local").mkdir()
    proc, log = driver(env, workdir, "local", "--num-cpus", 2, "--data", store, "--storage", workdir / "results",
                       "--epochs", 1, "--no-probe")
    try:
        line = wait_for(lambda: next((ln for ln in log.read_text().splitlines() if "dashboard:" in ln), None),
                        180, "the dashboard line", procs=[(proc, log)])
        url = line.split("dashboard:", 1)[1].split()[0]  # the URL, then the token hint
        assert url.startswith("http://127.0.0.1:"), line
        port = int(url.rsplit(":", 1)[1].strip("/"))
        assert listening_hosts(port) == {"127.0.0.1"}, listening_hosts(port)
        assert http_get(url + "/api/version", token=None)[0] == 401
        assert http_get(url + "/api/version")[0] == 200
        wait_for(lambda: list((workdir / "results" / "local").glob("*/result.json")), 180, "a trial's first result",
                 procs=[(proc, log)])
        servers = listeners_of(process_tree(proc.pid))
        names = {name for _, _, name in servers}
        assert {"gcs_server", "raylet"} <= names and len(servers) >= 8, servers
        assert {host for host, _, _ in servers} == {"127.0.0.1"}, servers
        finish(proc, log, 300)
    finally:
        stop(proc, grace=10)
    assert len(list((workdir / "results" / "local").glob("*/result.json"))) == 4


def test_search_uses_both_nodes_and_s3_while_dashboard_shows_it(cluster, s3, workdir, slower_store):
    env, client = s3
    exp = "exp/both"
    proc, log = driver(cluster.env, workdir, "both", "--address", cluster.address, "--storage", f"s3://{BUCKET}/exp",
                       "--data", slower_store, "--epochs", 3, "--scheduler", "fifo")
    actors: dict[str, dict] = {}
    try:
        # while it runs: the dashboard lists both nodes and the trial actors (with the token only)
        def trial_actors():
            rows = cluster.api("/api/v0/actors?limit=1000")["data"]["result"]["result"]
            actors.update({a["actor_id"]: a for a in rows if "ImplicitFunc" in a["class_name"]})
            return {a["node_id"] for a in actors.values()} >= set(cluster.node_ids.values())

        wait_for(trial_actors, 240, "trial actors on both nodes in the dashboard", interval=1, procs=[(proc, log)])
        nodes = cluster.alive_nodes()
        assert {n["node_id"] for n in nodes} == set(cluster.node_ids.values())
        assert {n["node_ip"] for n in nodes} == {NODE_IP}  # all cluster traffic on loopback
        assert http_get(cluster.dashboard_url + "/api/v0/nodes", token=None)[0] == 401
        assert http_get(cluster.dashboard_url + "/api/v0/nodes", token="0" * 64)[0] == 403
        summary_view = cluster.api("/nodes?view=summary")["data"]["summary"]
        assert {s["raylet"]["nodeId"] for s in summary_view} == set(cluster.node_ids.values())
        assert listening_hosts(cluster.dashboard) == {"127.0.0.1"}
        out = finish(proc, log, 420)
    finally:
        stop(proc, grace=10)
    assert "dashboard: http://127.0.0.1:" in out and f"s3://{BUCKET}/{exp}" in out
    keys = s3_keys(client, exp + "/")
    assert f"{exp}/summary.md" in keys and f"{exp}/summary.parquet" in keys  # summarized from the s3:// URI
    df = summary(client, exp)
    assert len(df) == 4 and "unfinished" not in set(df["status"]) and "errored" not in set(df["status"])
    assert set(df["node"]) == set(cluster.node_ids.values()), df[["trial_id", "node", "status"]]
    res = s3_results(client, exp)
    assert len(res) == 4 and all(rows and all(r["node"] for r in rows) for rows in res.values())
    assert any("/checkpoint_" in k for k in keys)
    # TensorBoard: Tune's TBX logger writes event files into every trial folder (tensorboardX is installed)
    pytest.importorskip("tensorboardX")
    trial_dirs = {k.split("/")[2] for k in keys if k.endswith("/result.json")}
    assert trial_dirs == {k.split("/")[2] for k in keys if "/events.out.tfevents" in k}


def test_node_local_storage_on_two_nodes_fails_fast(cluster, workdir, store):
    code, err = refused(cluster.env, workdir, "local-path", "--address", cluster.address,
                        "--storage", workdir / "node-local", "--data", store)
    assert code == 2, err[-3000:]
    assert "node-local path on a 2-node cluster" in err and "s3://" in err and "NFS" in err, err[-3000:]
    assert "Traceback" not in err
    assert not (workdir / "node-local" / "local-path").exists()  # nothing started


def test_driver_with_wrong_token_is_refused(cluster, s3, workdir, store):
    """Token authentication is on: a driver with another token is refused by the GCS (exit 2, nothing run)."""
    _, client = s3
    env = {**cluster.env, "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_gcs_server_port_wait_time_s": "3"}  # Ray retries the GCS for ~20 s by default
    code, out = refused(env, workdir, "wrong-token", "--address", cluster.address, "--storage", f"s3://{BUCKET}/exp",
                        "--data", store)
    assert code == 2, out[-3000:]
    assert "InvalidAuthToken" in out and "error: --address" in out, out[-3000:]
    assert not s3_keys(client, "exp/wrong-token/")


def test_driver_without_any_token_gets_one_line(cluster, workdir, store):
    """RAY_AUTH_MODE=token but no token anywhere (no RAY_AUTH_TOKEN, no ~/.ray/auth_token): one line, exit 2."""
    home = workdir / "home-without-token"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in cluster.env.items() if k != "RAY_AUTH_TOKEN"}
    code, out = refused({**env, "HOME": str(home)}, workdir, "no-token", "--address", cluster.address,
                        "--storage", workdir / "no-token", "--data", store, timeout=120)
    assert code == 2 and "Traceback" not in out, out[-3000:]
    assert "error: --address" in out and "token" in out, out[-3000:]


def test_job_submission_through_the_dashboard_uploads_the_checkout_and_the_shipped_data(cluster, s3, workdir):
    """scripts/cluster_submit.sh: `ray job submit` to the dashboard's job API (token required), the search's
    driver on the head node, the repository as the job's working directory, results in S3. Without --data the
    job's search reads the shipped data/pydocs.parquet from the uploaded checkout (data files are otherwise left
    out of the upload); a relative --data that is missing or outside the checkout is refused with one line before
    anything is submitted (an absolute --data, a path on the head node, is tests/test_job_env.py's)."""
    _, client = s3
    env = {**cluster.env, "DASHBOARD": cluster.dashboard_url}
    args = ["--storage", f"s3://{BUCKET}/exp", "--name", "shipped", "--epochs", 1, "--no-probe",
            "--confirm-top", 0]  # the confirmation stage is tests/test_confirm.py's
    bad = script("cluster_submit.sh", *args, env={**env, "RAY_AUTH_TOKEN": secrets.token_hex(32)}, timeout=120)
    assert bad.returncode != 0 and "Invalid authentication token" in bad.stderr, bad.stderr[-2000:]
    assert script("cluster_submit.sh", "--epochs", 1, env=env, timeout=60).returncode == 2  # no --storage
    for data, problem in (("no/such.parquet", "not found in the repository"),
                          ("../outside.parquet", "outside the repository")):
        r = script("cluster_submit.sh", "--storage", f"s3://{BUCKET}/exp", "--name", "refused", "--data", data,
                   env=env, timeout=120)
        assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr[-2000:]
        assert r.stderr.startswith(f"error: --data {data}: {problem}"), r.stderr
    assert not s3_keys(client, "exp/refused/")
    r = script("cluster_submit.sh", *args, env=env, timeout=420)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "succeeded" in out, r.stdout[-4000:] + r.stderr[-3000:]
    assert "data/pydocs.parquet (train" in out and "dim 384" in out, out[-4000:]
    named = {(j.get("metadata") or {}).get("job_name") for j in cluster.api("/api/jobs/")}
    assert "shipped" in named, named  # the dashboard's Jobs page names the job as the experiment
    df = summary(client, "exp/shipped")
    assert len(df) == 4 and "errored" not in set(df["status"]), df


def test_killed_worker_node_trials_resume_elsewhere(cluster, s3, workdir, slower_store):
    """SIGKILL the worker node once a trial there has uploaded its epoch-2 checkpoint to S3: the search
    finishes, that trial goes on from a checkpoint on the head node, every trial is in the summary.

    Runs last: it leaves the module's cluster with the head node only."""
    env, client = s3
    exp = "exp/killed"
    worker_id, head_id = cluster.node_ids["worker"], cluster.node_ids["head"]
    # more epochs, no gate stops a trial: the kill lands mid-trial
    space = yaml.safe_load(SMOKE.read_text())
    space["gates"] = {"drift": -1.0, "margin": -10.0, "grace_epochs": 0}
    (workdir / "no_gates.yaml").write_text(yaml.safe_dump(space))
    proc, log = driver(cluster.env, workdir, "killed", "--address", cluster.address, "--storage",
                       f"s3://{BUCKET}/exp", "--data", slower_store, "--epochs", 8, "--scheduler", "fifo", "--no-probe",
                       space=workdir / "no_gates.yaml")
    try:
        def worker_checkpoints() -> dict[str, int]:
            """{trial folder: newest epoch} of the checkpoints in S3 that trials wrote on the worker node (trials
            upload their checkpoints themselves; the metrics.json in each names its node)."""
            found: dict[str, int] = {}
            for key in s3_keys(client, exp + "/"):
                if key.endswith("/metrics.json") and "/checkpoint_" in key:
                    try:
                        m = json.loads(s3_read(client, key))
                    except Exception:  # deleted meanwhile (num_to_keep)
                        continue
                    if m.get("node") == worker_id:
                        trial = key.split("/")[2]
                        found[trial] = max(found.get(trial, 0), m["epoch"])
            return found

        seen = wait_for(lambda: {t: e for t, e in worker_checkpoints().items() if e >= 2}, 300,
                        "an epoch-2 checkpoint of a trial on the worker node", interval=0.5, procs=[(proc, log)])
        kill_node(cluster.pid("worker"), "worker")
        trial = next(iter(seen))
        newest = max(seen[trial], worker_checkpoints().get(trial, 0))  # the last checkpoint it can go on from
        out = finish(proc, log, 600)
    finally:
        stop(proc, grace=10)
    assert "dashboard:" in out
    wait_for(lambda: len(cluster.alive_nodes()) == 1, 60, "the dead worker node to leave the node list")
    df = summary(client, exp)
    assert len(df) == 4, df
    assert "unfinished" not in set(df["status"]) and "errored" not in set(df["status"]), \
        df[["trial_id", "status", "error", "stopped_epoch"]].to_string()
    assert (df["stopped_epoch"] == 8).all()
    rows = s3_results(client, exp)[trial]
    nodes, epochs = [r["node"] for r in rows], [r["epoch"] for r in rows]
    assert nodes[0] == worker_id and nodes[-1] == head_id, nodes  # started on the worker, ended on the head
    first_on_head = nodes.index(head_id)
    # went on from one of its checkpoints (not from scratch), and no epoch is missing
    assert 1 < epochs[first_on_head] <= newest + 1, (epochs, nodes, newest)
    assert sorted(set(epochs)) == list(range(1, 9)), epochs
    assert df.set_index("trial_dir").loc[trial, "node"] == head_id
