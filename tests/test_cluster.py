"""A real Ray cluster on two hosts (tests/host_cluster.py: network and mount namespaces joined by a veth pair, or
loopback nodes where namespaces cannot be made), moto's S3 server as the only shared storage, and
`python tune_p7/search.py --address ...` or scripts/cluster_submit.sh as the driver on the head host: that a
search uses both hosts and S3 and keeps the driver's secret home, what it refuses before any trial, that a
worker cut off or orphaned by a head restart rejoins by itself, that a job-submitted search resumes after a head
restart, and that trials survive a dead worker machine."""
from __future__ import annotations

import json
import secrets
import shutil
import time

import pytest
import yaml

from cluster_harness import BUCKET, SMOKE, TOKEN, finish, private_env, private_workdir, s3_results, summary, synth
from host_cluster import (DRIVER_SECRET, cluster_on, driver, kill_worker_machine, lab, ray_log_text, refused,
                          s3_server, wait_dead)
from local_processes import stop, tail, wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def workdir():
    with private_workdir() as path:
        yield path


@pytest.fixture(scope="module")
def base_env():
    return private_env()


@pytest.fixture(scope="module")
def hosts(workdir):
    with lab(workdir) as made:
        yield made


@pytest.fixture(scope="module")
def store(hosts):
    """Data on the head host (the driver's), as the head sees it."""
    synth(hosts.head.outside(hosts.head.tmp("synth.parquet")), 120)
    return hosts.head.tmp("synth.parquet")


@pytest.fixture(scope="module")
def slower_store(hosts):
    """Trials of a few seconds: longer than starting a trial actor on a node, long enough to kill a node."""
    synth(hosts.head.outside(hosts.head.tmp("slower.parquet")), 400)
    return hosts.head.tmp("slower.parquet")


@pytest.fixture(scope="module")
def s3(hosts, base_env):
    pytest.importorskip("moto.server")
    with s3_server(hosts, base_env) as server:
        yield server


@pytest.fixture(scope="module")
def cluster(hosts, base_env, s3):
    with cluster_on(hosts, base_env, s3) as c:
        yield c


def isolated_only(hosts, what: str) -> None:
    if not hosts.worker.isolated:
        pytest.skip(f"{what} needs separate hosts; on loopback nodes because: {hosts.fallback}")


# ---------------------------------------------------------------- tests (the worker-killing one runs last)

def test_search_uses_both_hosts_and_s3_and_keeps_the_drivers_secret_home(cluster, s3, slower_store):
    """Trials on both hosts, results and summary in S3, the dashboard (token only) listing both nodes; each node
    writes S3 with its own key: the driver's secret is in no trial's runtime env, not in the dashboard's actor
    API and not in any node's runtime_env_agent.log."""
    exp = "exp/both"
    # A new worker per trial, 5 epochs and no gate: a reused head worker can take the waiting trial before the
    # worker host's first actor has started (a fresh host imports torch), and then every trial ends on the head
    # (CI's failure under load with reused workers, the default)
    space = yaml.safe_load(SMOKE.read_text())
    space["gates"] = {"drift": -1.0, "margin": -10.0, "grace_epochs": 0}
    cluster.lab.head.outside(cluster.lab.head.tmp("both.yaml")).write_text(yaml.safe_dump(space))
    proc, log = driver(cluster, "both", "--address", cluster.address, "--storage", f"s3://{BUCKET}/exp",
                       "--data", slower_store, "--epochs", 5, "--scheduler", "fifo", "--no-reuse-actors",
                       space=cluster.lab.head.tmp("both.yaml"))
    actors: dict[str, dict] = {}
    try:
        def trial_actors():
            rows = cluster.api("/api/v0/actors?limit=1000&detail=true")["data"]["result"]["result"]
            actors.update({a["actor_id"]: a for a in rows if "ImplicitFunc" in a["class_name"]})
            return {a["node_id"] for a in actors.values()} >= set(cluster.node_ids.values())

        wait_for(trial_actors, 240, "trial actors on both nodes in the dashboard", interval=1, procs=[(proc, log)])
        raw_api = cluster.get("/api/v0/actors?limit=1000&detail=true")[1].decode()
        nodes = cluster.alive_nodes()
        assert {n["node_id"] for n in nodes} == set(cluster.node_ids.values())
        assert {n["node_ip"] for n in nodes} == {cluster.lab.head.ip, cluster.lab.worker.ip}
        assert cluster.get("/api/v0/nodes", token=None)[0] == 401
        assert cluster.get("/api/v0/nodes", token="0" * 64)[0] == 403
        out = finish(proc, log, 420)
    finally:
        stop(proc, grace=10)
    assert "dashboard: http://127.0.0.1:" in out and f"s3://{BUCKET}/{exp}" in out
    assert "ray get-auth-token" in out.split("dashboard:", 1)[1].splitlines()[0]  # the cluster asks for its token
    keys = s3.keys(exp + "/")
    assert f"{exp}/summary.md" in keys and f"{exp}/summary.parquet" in keys  # summarized from the s3:// URI
    df = summary(s3, exp)
    assert len(df) == 4 and "unfinished" not in set(df["status"]) and "errored" not in set(df["status"])
    assert set(df["node"]) == set(cluster.node_ids.values()), df[["trial_id", "node", "status"]]
    res = s3_results(s3, exp)
    assert len(res) == 4 and all(rows and all(r["node"] for r in rows) for rows in res.values())
    assert any("/checkpoint_" in k for k in keys)
    pytest.importorskip("tensorboardX")  # Tune's TBX logger writes event files into every trial folder
    trial_dirs = {k.split("/")[2] for k in keys if k.endswith("/result.json")}
    assert trial_dirs == {k.split("/")[2] for k in keys if "/events.out.tfevents" in k}
    # the secret stayed with the driver
    envs = [a.get("serialized_runtime_env") or "" for a in actors.values()]
    assert envs and not any(DRIVER_SECRET in e or "AWS_SECRET_ACCESS_KEY" in e for e in envs), envs
    assert DRIVER_SECRET not in raw_api
    for host, env in ((cluster.lab.head, cluster.head_env), (cluster.lab.worker, cluster.worker_env)):
        logs = ray_log_text(host, env.get("RAY_TEMP_DIR", "/tmp/ray"), "runtime_env_agent.log")
        assert logs and DRIVER_SECRET not in logs, host.name


def test_node_local_storage_on_two_nodes_fails_fast(cluster, store):
    code, err = refused(cluster, "local-path", "--address", cluster.address,
                        "--storage", cluster.lab.head.tmp("node-local"), "--data", store)
    assert code == 2, err[-3000:]
    assert "node-local path on a 2-node cluster" in err and "s3://" in err and "NFS" in err, err[-3000:]
    assert "Traceback" not in err
    assert not cluster.lab.head.outside(cluster.lab.head.tmp("node-local/local-path")).exists()


def test_driver_with_wrong_token_is_refused(cluster, s3, store):
    """Token authentication is on: a driver with another token is refused by the GCS (exit 2, nothing run)."""
    env = {**cluster.env, "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_gcs_server_port_wait_time_s": "3"}  # Ray retries the GCS for ~20 s by default
    code, out = refused(cluster, "wrong-token", "--address", cluster.address, "--storage", f"s3://{BUCKET}/exp",
                        "--data", store, env=env)
    assert code == 2, out[-3000:]
    assert "InvalidAuthToken" in out and "error: --address" in out, out[-3000:]
    assert not s3.keys("exp/wrong-token/")


def test_driver_without_auth_mode_gets_one_line_naming_the_variable(cluster, s3, store):
    """The head's token in ~/.ray/auth_token but no RAY_AUTH_MODE=token (as a driver run by hand): one line
    saying to export it and where the token goes, exit 2, none of Ray's retry lines."""
    home = cluster.lab.head.tmp("home-token-file")
    cluster.lab.head.outside(home).mkdir()
    (cluster.lab.head.outside(home) / ".ray").mkdir()
    (cluster.lab.head.outside(home) / ".ray" / "auth_token").write_text(TOKEN)
    env = {k: v for k, v in cluster.env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    env.update({"HOME": home, "RAY_gcs_server_port_wait_time_s": "3"})
    code, out = refused(cluster, "no-auth-mode", "--address", cluster.address, "--storage", f"s3://{BUCKET}/exp",
                        "--data", store, env=env)
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert code == 2 and lines[-1].startswith("error: --address"), out[-3000:]
    assert "export RAY_AUTH_MODE=token" in lines[-1] and "~/.ray/auth_token" in lines[-1], lines[-1]
    assert "Failed to get cluster ID" not in out and "ray stop" not in out and "Traceback" not in out, out[-3000:]
    assert not s3.keys("exp/no-auth-mode/")


def test_driver_without_any_token_gets_one_line(cluster, store):
    """RAY_AUTH_MODE=token but no token anywhere (no RAY_AUTH_TOKEN, no ~/.ray/auth_token): one line, exit 2."""
    home = cluster.lab.head.tmp("home-without-token")
    cluster.lab.head.outside(home).mkdir(exist_ok=True)
    env = {k: v for k, v in cluster.env.items() if k != "RAY_AUTH_TOKEN"}
    code, out = refused(cluster, "no-token", "--address", cluster.address, "--storage", cluster.lab.head.tmp("nt"),
                        "--data", store, env={**env, "HOME": home}, timeout=120)
    assert code == 2 and "Traceback" not in out, out[-3000:]
    assert "error: --address" in out and "token" in out, out[-3000:]


def test_a_node_without_tune_p7_or_storage_settings_stops_the_search_before_any_trial(cluster, s3, store):
    """A second worker node on the worker host started as a bare machine would be: no tune_p7, no storage
    settings. The search exits 2 before any trial with one line naming that node and both fixes; nothing is
    written to S3."""
    isolated_only(cluster.lab, "a node that cannot import tune_p7")
    bare = {k: v for k, v in cluster.worker_env.items() if not k.startswith("AWS_") and k != "PYTHONPATH"}
    bare.update({"TUNE_P7_CLUSTER_NODE": "bare", "P7_NODE_DIR": "/tmp/bare-ctl", "RAY_TEMP_DIR": "/tmp/rb",
                 "NODE_MANAGER_PORT": "7380", "OBJECT_MANAGER_PORT": "7381", "DASHBOARD_AGENT_GRPC_PORT": "7382",
                 "RUNTIME_ENV_AGENT_PORT": "7383", "METRICS_EXPORT_PORT": "7384",
                 "DASHBOARD_AGENT_LISTEN_PORT": "7385", "MIN_WORKER_PORT": "11000", "MAX_WORKER_PORT": "11100"})
    r = cluster.script("worker", "cluster_worker.sh", cluster.address, env=bare)
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        bare_id = wait_for(lambda: next(iter({n["node_id"] for n in cluster.alive_nodes()}
                                             - set(cluster.node_ids.values())), None), 120, "the bare node")
        t0 = time.monotonic()
        code, out = refused(cluster, "bare", "--address", cluster.address, "--storage", f"s3://{BUCKET}/exp",
                            "--data", store)
        took = time.monotonic() - t0
    finally:
        cluster.script("worker", "cluster_stop.sh", "worker", env=bare, timeout=120)
    lines = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(lines) == 1, out[-3000:]
    assert lines[0].startswith(f"error: node {cluster.lab.worker.ip} ({bare_id[:8]})"), lines[0]
    assert "cannot import tune_p7" in lines[0] and "install it there" in lines[0], lines[0]
    assert "cannot write s3://" in lines[0] and "export the storage settings" in lines[0], lines[0]
    assert "ModuleNotFoundError" not in out.replace(lines[0], "") and "Traceback" not in out, out[-3000:]
    assert not s3.keys("exp/bare/")  # not even the search record: checked before anything is written
    print(f"refused in {took:.0f} s")
    wait_for(lambda: len(cluster.alive_nodes()) == 2, 60, "the bare node to leave")


def test_job_submission_through_the_dashboard_uploads_the_checkout_and_the_shipped_data(cluster, s3):
    """scripts/cluster_submit.sh on the head host: `ray job submit` to the dashboard's job API wants the token;
    a missing --storage or a relative --data that is missing or outside the checkout is one line before anything
    is submitted (an absolute --data, a path on the head node, is tests/test_job_env.py's)."""
    env = {**cluster.env, "DASHBOARD": cluster.dashboard_url}
    args = ["--storage", f"s3://{BUCKET}/exp", "--name", "shipped", "--epochs", 1]
    bad = cluster.script("head", "cluster_submit.sh", *args, env={**env, "RAY_AUTH_TOKEN": secrets.token_hex(32)},
                         timeout=120)
    assert bad.returncode != 0 and "Invalid authentication token" in bad.stderr, bad.stderr[-2000:]
    assert cluster.script("head", "cluster_submit.sh", "--epochs", 1, env=env, timeout=60).returncode == 2
    for data, problem in (("no/such.parquet", "not found in the repository"),
                          ("../outside.parquet", "outside the repository")):
        r = cluster.script("head", "cluster_submit.sh", "--storage", f"s3://{BUCKET}/exp", "--name", "refused",
                           "--data", data, env=env, timeout=120)
        assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr[-2000:]
        assert r.stderr.startswith(f"error: --data {data}: {problem}"), r.stderr
    assert not s3.keys("exp/refused/")
    # a job that runs on the shipped data to the end: test_head_restart_then_resume_of_a_job_submitted_search


def test_a_worker_cut_off_until_marked_dead_rejoins_by_itself(cluster):
    """The worker's link cut until the GCS marks it dead (short health checks), then restored: its raylet exits
    ("marked as dead"), the supervisor starts it again and a new worker node joins, with no one touching it."""
    isolated_only(cluster.lab, "cutting a link")
    old = cluster.node_ids["worker"]
    t0 = time.monotonic()
    cluster.lab.worker.link(False)
    try:
        wait_dead(cluster, old, 120)
        dead = time.monotonic() - t0
    finally:
        cluster.lab.worker.link(True)
    t1 = time.monotonic()
    new = cluster.wait_worker(180)
    assert new != old
    print(f"marked dead {dead:.0f} s after the cut; a new worker node {time.monotonic() - t1:.0f} s after the link")
    assert "exited" in tail(cluster.lab.workdir / "supervisor.log")


def test_head_restart_then_resume_of_a_job_submitted_search(cluster, s3):
    """A search submitted with scripts/cluster_submit.sh (the checkout and the shipped data uploaded as the job's
    working directory, the driver on the head, results in S3), its head stopped mid-search and its /tmp/ray wiped
    (the job's uploaded copies of the space and data with it), the head started again: the supervised worker
    rejoins by itself, and `cluster_submit.sh --storage ... --name ... --resume` finishes every trial."""
    env = {**cluster.env, "DASHBOARD": cluster.dashboard_url, "P7_NO_WAIT": "1"}
    exp = "exp/restarted"
    r = cluster.script("head", "cluster_submit.sh", "--storage", f"s3://{BUCKET}/exp", "--name", "restarted",
                       "--epochs", 3, "--no-probe", "--no-plots", "--confirm-top", 0, "--scheduler", "fifo", env=env,
                       timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    wait_for(lambda: any("/checkpoint_" in k for k in s3.keys(exp + "/")), 300, "a first checkpoint", interval=1)
    cluster.stop_node("head")
    temp = cluster.lab.head.outside(cluster.head_env.get("RAY_TEMP_DIR", "/tmp/ray"))
    shutil.rmtree(temp, ignore_errors=True)
    old_worker = cluster.node_ids["worker"]
    cluster.start_head()
    t0 = time.monotonic()
    assert cluster.wait_worker(240) != old_worker  # rejoined by itself
    print(f"the worker rejoined {time.monotonic() - t0:.0f} s after the head was back")
    r = cluster.script("head", "cluster_submit.sh", "--storage", f"s3://{BUCKET}/exp", "--name", "restarted",
                       "--resume", "--no-plots", env={**env, "P7_NO_WAIT": "0"}, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "succeeded" in out, out[-5000:]
    assert "data/pydocs.parquet (train" in out and "dim 384" in out, out[-4000:]  # the upload, found again
    named = {(j.get("metadata") or {}).get("job_name") for j in cluster.api("/api/jobs/")}
    assert "restarted" in named, named  # the dashboard's Jobs page names the job as the experiment
    df = summary(s3, exp)
    assert len(df) == 4 and not set(df["status"]) & {"unfinished", "errored"}, df[["trial_id", "status"]]
    stored = json.loads(s3.read(f"{exp}/tune_p7_search.json"))  # what it resumed from: the job's copy was gone
    assert "working_dir_files" in stored["space"] and stored["space_rel"] == "search_spaces/smoke.yaml", stored


def test_killed_worker_node_trials_resume_elsewhere(cluster, s3, slower_store):
    """SIGKILL the worker machine (its supervisor and every process of its node) once a trial there has
    uploaded its epoch-2 checkpoint: the search finishes, that trial goes on from a checkpoint on the head,
    every trial is in the summary. Runs last: it leaves the module's cluster with the head node only."""
    exp = "exp/killed"
    # the worker as it is now, its CPU offered: after the head's restart (the test before) it may have rejoined
    # again under a new id; a search started before its CPU counts runs one trial at a time on the head
    worker_id, head_id = cluster.wait_worker(120), cluster.node_ids["head"]
    wait_for(lambda: sum(n.get("resources_total", {}).get("CPU", 0) for n in cluster.alive_nodes()) >= 2, 120,
             "both nodes' CPUs")
    space = yaml.safe_load(SMOKE.read_text())
    space["gates"] = {"drift": -1.0, "margin": -10.0, "grace_epochs": 0}  # no gate stops a trial: the kill is mid-trial
    cluster.lab.head.outside(cluster.lab.head.tmp("no_gates.yaml")).write_text(yaml.safe_dump(space))
    proc, log = driver(cluster, "killed", "--address", cluster.address, "--storage", f"s3://{BUCKET}/exp",
                       "--data", slower_store, "--epochs", 8, "--scheduler", "fifo", "--no-probe",
                       "--no-reuse-actors",  # else a busy machine can run every trial on the head (see "both")
                       space=cluster.lab.head.tmp("no_gates.yaml"))
    read: dict[str, tuple[str, int] | None] = {}  # checkpoint key -> (trial folder, epoch) on the worker, or None
    ran_on: dict[str, set] = {}  # trial folder -> the nodes its checkpoints name (said if no trial ran on the worker)
    try:
        def worker_checkpoints() -> dict[str, int]:
            """{trial folder: newest epoch} of the checkpoints in S3 that trials wrote on the worker node. Each
            checkpoint's metrics are read once: a poll must stay quick for the kill to land mid-trial."""
            for key in s3.keys(exp + "/"):
                if key.endswith("/metrics.json") and "/checkpoint_" in key and key not in read:
                    try:
                        m = json.loads(s3.read(key))
                    except Exception:  # deleted meanwhile (num_to_keep)
                        continue
                    read[key] = (key.split("/")[2], m["epoch"]) if m.get("node") == worker_id else None
                    ran_on.setdefault(key.split("/")[2], set()).add(m.get("node"))
            found: dict[str, int] = {}
            for trial, epoch in filter(None, read.values()):
                found[trial] = max(found.get(trial, 0), epoch)
            return found

        try:
            seen = wait_for(lambda: {t: e for t, e in worker_checkpoints().items() if e >= 2}, 300,
                            "an epoch-2 checkpoint of a trial on the worker node", interval=0.5, procs=[(proc, log)])
        except pytest.fail.Exception as e:
            nodes = {n["node_id"]: n.get("resources_total") for n in cluster.alive_nodes()}
            pytest.fail(f"worker {worker_id}, head {head_id}, alive {nodes}, trials ran on {ran_on}\n{e}")
        kill_worker_machine(cluster)
        trial = next(iter(seen))
        newest = max(seen[trial], worker_checkpoints().get(trial, 0))
        out = finish(proc, log, 600)
    finally:
        stop(proc, grace=10)
    assert "dashboard:" in out
    wait_for(lambda: len(cluster.alive_nodes()) == 1, 60, "the dead worker node to leave the node list")
    df = summary(s3, exp)
    assert len(df) == 4, df
    assert "unfinished" not in set(df["status"]) and "errored" not in set(df["status"]), \
        df[["trial_id", "status", "error", "stopped_epoch"]].to_string()
    assert (df["stopped_epoch"] == 8).all()
    rows = s3_results(s3, exp)[trial]
    nodes, epochs = [r["node"] for r in rows], [r["epoch"] for r in rows]
    assert head_id in nodes, f"the kill came too late to test anything: trial {trial} ended on the worker ({epochs})"
    assert nodes[0] == worker_id and nodes[-1] == head_id, nodes
    first_on_head = nodes.index(head_id)
    assert 1 < epochs[first_on_head] <= newest + 1, (epochs, nodes, newest)
    assert sorted(set(epochs)) == list(range(1, 9)), epochs
    assert df.set_index("trial_dir").loc[trial, "node"] == head_id
