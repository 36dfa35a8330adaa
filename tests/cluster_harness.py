"""The harness of tests/test_cluster.py: a real multi-node Ray cluster on this machine (a head and a worker node
brought up by scripts/cluster_head.sh and scripts/cluster_worker.sh, each a `ray start --block` process in a
session of its own), moto's S3 server (plain `moto_server`), and `python tune_p7/search.py --address ...` (or
scripts/cluster_submit.sh) as the driver.

Everything stays on loopback and in private folders, so other Ray instances on the machine are not touched:

- every node runs with ``--node-ip-address 127.0.0.2`` (``NODE_IP``). Ray 2.60 rewrites 127.0.0.1/localhost given
  to ``ray start --node-ip-address`` into the machine's routable address (``resolve_ip_for_localhost``), so
  127.0.0.1 would send the cluster's traffic to eth0's address; 127.0.0.2 is loopback too and is kept as given.
- every port is chosen free and given explicitly (GCS, dashboard, node/object manager, agents, metrics, worker
  range);
- each node has its own short ``--temp-dir`` (unix socket paths must stay under 108 bytes, pytest's tmp_path is
  too deep), so no ``/tmp/ray/ray_current_cluster`` or session of anyone else is touched;
- token authentication uses a token made for this run (``RAY_AUTH_MODE=token`` + ``RAY_AUTH_TOKEN`` on every
  node and driver), never ``~/.ray/auth_token``;
- processes end by their own ids: scripts/cluster_stop.sh (SIGTERM to the recorded `ray start` pid, then SIGKILL
  to what is left of its session), then SIGKILL to any process still carrying this run's marker variable in its
  environment (every Ray process of a node inherits it). Never ``ray stop``, never a kill by name.
"""
from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO
from local_processes import (MARKER, MARKER_VAR, NODE_VAR, free_port, free_range, marked_pids, sigkill, spawn,
                             stop, sweep, tail, wait_for)

SEARCH = REPO / "tune_p7" / "search.py"
SMOKE = REPO / "search_spaces" / "smoke.yaml"
SCRIPTS = REPO / "scripts"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    """An executable of this Python's environment (beside sys.executable), else the one on PATH."""
    return str(BIN / name) if (BIN / name).exists() else (shutil.which(name) or name)


RAY = _tool("ray")
MOTO_SERVER = _tool("moto_server")
NODE_IP = "127.0.0.2"
BUCKET = "p7-cluster-test"
TOKEN = secrets.token_hex(32)  # like `ray get-auth-token --generate`, but private to this test run
WORKER_PORTS = 40  # per node: one port per Ray worker process (trials, retries, the driver)


def http_get(url: str, token: str | None = TOKEN, timeout: float = 10) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def script(name: str, *args, env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    r = subprocess.run([str(SCRIPTS / name), *map(str, args)], env=env, capture_output=True, text=True,
                       timeout=timeout, cwd=REPO, stdin=subprocess.DEVNULL)
    return r

# ---------------------------------------------------------------- setup: folder, data, environment, S3, nodes

@contextmanager
def private_workdir():
    """A short private folder (Ray's unix sockets live under --temp-dir), removed with whatever this run
    started when the block ends."""
    path = Path(tempfile.mkdtemp(prefix="p7c-", dir="/tmp"))
    try:
        yield path
    finally:
        sweep()
        shutil.rmtree(path, ignore_errors=True)


def synth(out: Path, articles: int) -> Path:
    subprocess.run([sys.executable, "-m", "tune_p7.synth", "--out", str(out), "--articles", str(articles),
                    "--chunks-per-article", "16", "--dim", "32", "--forward-signal", "2.0"],
                   check=True, capture_output=True, cwd=REPO, timeout=120)
    return out


def private_env() -> dict:
    """The environment of every node and driver: token auth with this run's token, the process marker, and
    free ports for the two Prometheus exporters of a head node (fixed 44217/44227 by default)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_"))}
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN, MARKER_VAR: MARKER, "PYTHONUNBUFFERED": "1",
                "RAY_USAGE_STATS_ENABLED": "0", "RAY": RAY, "PYTHON": sys.executable,
                "AUTOSCALER_METRIC_PORT": str(free_port()), "DASHBOARD_METRIC_PORT": str(free_port()),
                # `ray start --block` drains its node for up to 30 s on SIGTERM (for Serve); nothing to drain here
                "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"})
    return env


@contextmanager
def s3_server(workdir: Path, env: dict):
    """moto's S3 server on 127.0.0.1 and a bucket: yields (the AWS_* environment that points pyarrow/boto3 at
    it, a boto3 client)."""
    import boto3

    port = free_port()
    proc = spawn([MOTO_SERVER, "-H", "127.0.0.1", "-p", str(port)], env, workdir / "moto.log")
    try:
        env = {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
               "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="test",
                              aws_secret_access_key="test", region_name="us-east-1")
        wait_for(lambda: client.list_buckets() is not None, 60, "moto S3 server",
                 procs=[(proc, workdir / "moto.log")])
        client.create_bucket(Bucket=BUCKET)
        yield env, client
    finally:
        stop(proc, grace=5)


@dataclass
class Cluster:
    env: dict  # a driver's environment (S3 settings, the token)
    gcs: int
    dashboard: int
    ctl: dict[str, Path]  # node name -> its P7_NODE_DIR (pid file and log of the scripts)
    node_ids: dict[str, str] = field(default_factory=dict)  # node name -> Ray node id

    @property
    def address(self) -> str:
        return f"{NODE_IP}:{self.gcs}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard}"

    def pid(self, node: str) -> int:
        return int((self.ctl[node] / f"{node}.pid").read_text())

    def api(self, path: str, token: str | None = TOKEN):
        status, body = http_get(self.dashboard_url + path, token)
        assert status == 200, f"{path}: HTTP {status} {body[:300]!r}"
        return json.loads(body)

    def alive_nodes(self) -> list[dict]:
        rows = self.api("/api/v0/nodes")["data"]["result"]["result"]
        return [n for n in rows if n["state"] == "ALIVE"]


def node_env(env: dict, name: str, workdir: Path, cpus: int = 1, worker_ports: int = WORKER_PORTS) -> dict:
    """What scripts/cluster_{head,worker}.sh read: ``cpus`` CPUs, NODE_IP, a private temp dir, a free port for
    each of the node's listeners."""
    low, high = free_range(worker_ports)
    return {**env, NODE_VAR: name, "NUM_CPUS": str(cpus), "NODE_IP": NODE_IP, "RAY_TEMP_DIR": str(workdir / name),
            "P7_NODE_DIR": str(workdir / f"{name}-ctl"),
            "NODE_MANAGER_PORT": str(free_port()), "OBJECT_MANAGER_PORT": str(free_port()),
            "DASHBOARD_AGENT_GRPC_PORT": str(free_port()), "DASHBOARD_AGENT_LISTEN_PORT": str(free_port()),
            "RUNTIME_ENV_AGENT_PORT": str(free_port()), "METRICS_EXPORT_PORT": str(free_port()),
            "MIN_WORKER_PORT": str(low), "MAX_WORKER_PORT": str(high)}

@contextmanager
def two_node_cluster(env: dict, workdir: Path):
    """A head node and one worker node, 1 CPU each, started by the scripts with ``env`` (Ray passes no
    environment variables to other nodes: they must be set on each `ray start`); stopped by
    scripts/cluster_stop.sh when the block ends."""
    try:
        with socket.socket() as s:
            s.bind((NODE_IP, 0))
    except OSError:
        pytest.skip(f"{NODE_IP} is not a loopback address here")
    gcs, dash = free_port(), free_port()
    head_env = {**node_env(env, "head", workdir), "GCS_PORT": str(gcs), "DASHBOARD_PORT": str(dash),
                "RAY_CLIENT_SERVER_PORT": str(free_port())}
    worker_env = node_env(env, "worker", workdir)
    c = Cluster(env, gcs, dash, {"head": Path(head_env["P7_NODE_DIR"]), "worker": Path(worker_env["P7_NODE_DIR"])})
    try:
        r = script("cluster_head.sh", env=head_env)
        assert r.returncode == 0, r.stdout + r.stderr + tail(c.ctl["head"] / "head.log")
        assert f"{NODE_IP}:{gcs}" in r.stdout and f"http://127.0.0.1:{dash}" in r.stdout, r.stdout
        c.node_ids["head"] = wait_for(lambda: (n := c.alive_nodes()) and n[0]["node_id"], 120, "the dashboard")
        r = script("cluster_worker.sh", c.address, env=worker_env)
        assert r.returncode == 0, r.stdout + r.stderr + tail(c.ctl["worker"] / "worker.log")
        nodes = wait_for(lambda: (n := c.alive_nodes()) and len(n) == 2 and n, 120, "the worker node")
        c.node_ids["worker"] = next(n["node_id"] for n in nodes if n["node_id"] != c.node_ids["head"])
        yield c
    finally:
        for node in ("worker", "head"):
            try:
                r = script("cluster_stop.sh", node, env={**env, "P7_NODE_DIR": str(c.ctl[node])}, timeout=120)
                print(r.stdout, r.stderr)
            except subprocess.TimeoutExpired:
                pass
        sweep()


SHARED_MARKER = f"{MARKER}-shared"  # not MARKER: the cluster tests' sweeps must leave the shared node alone


@contextmanager
def shared_node(cpus: int = 2):
    """One Ray node for a whole test session's searches (scripts/cluster_head.sh: ``cpus`` CPUs on NODE_IP, this
    run's token, free ports); yields the environment a driver needs to join it, or {} (with a warning when the
    start failed) where NODE_IP cannot be bound or the node does not start: each search then starts its own local
    Ray. Ended by scripts/cluster_stop.sh, then whatever of it is left by its own marker."""
    try:
        with socket.socket() as s:
            s.bind((NODE_IP, 0))
    except OSError:
        yield {}
        return
    workdir = Path(tempfile.mkdtemp(prefix="p7s-", dir="/tmp"))
    env = {**private_env(), MARKER_VAR: SHARED_MARKER}
    gcs = free_port()
    head_env = {**node_env(env, "shared", workdir, cpus=cpus, worker_ports=200), "GCS_PORT": str(gcs),
                "DASHBOARD_PORT": str(free_port()), "RAY_CLIENT_SERVER_PORT": str(free_port())}
    ctl = Path(head_env["P7_NODE_DIR"])
    try:
        r = script("cluster_head.sh", env=head_env)
        if r.returncode != 0:  # the searches still run, each on a local Ray of its own
            warnings.warn(f"no shared Ray node for this session: {r.stderr.strip()[-300:]} "
                          f"{tail(ctl / 'head.log', 300)}")
            yield {}
            return
        yield {"RAY_ADDRESS": f"{NODE_IP}:{gcs}", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN}
    finally:
        try:
            script("cluster_stop.sh", "head", env={**env, "P7_NODE_DIR": str(ctl)}, timeout=120)
        except subprocess.TimeoutExpired:
            pass
        sigkill(marked_pids(marker=SHARED_MARKER))
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------- the search as a driver, S3

def driver(env: dict, workdir: Path, name: str, *args, space: Path = SMOKE) -> tuple[subprocess.Popen, Path]:
    log = workdir / f"driver-{name}.log"
    cmd = [sys.executable, str(SEARCH), "--name", name, "--space", str(space), "--confirm-top", "0", *map(str, args)]
    return spawn(cmd, env, log), log


def refused(env: dict, workdir: Path, name: str, *args, timeout: float = 180) -> tuple[int, str]:
    """A driver expected to stop by itself (refused input): its exit code and log."""
    proc, log = driver(env, workdir, name, *args)
    try:
        proc.wait(timeout)
    finally:
        stop(proc, grace=5)
    return proc.returncode, log.read_text(errors="replace")


def finish(proc: subprocess.Popen, log: Path, timeout: float) -> str:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"search did not finish in {timeout:.0f} s:\n{tail(log)}")
    finally:
        stop(proc, grace=10)  # the driver's own helpers, if any are left
    out = log.read_text(errors="replace")
    assert proc.returncode == 0, out[-5000:]
    return out


def s3_keys(client, prefix: str) -> list[str]:
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def s3_read(client, key: str) -> bytes:
    return client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def s3_results(client, exp: str) -> dict[str, list[dict]]:
    """Every trial's result.json rows, by trial folder."""
    out = {}
    for key in s3_keys(client, exp + "/"):
        if key.endswith("/result.json"):
            rows = []
            for line in s3_read(client, key).decode().splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a line being written
            out[key.split("/")[-2]] = rows
    return out


def summary(client, exp: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(s3_read(client, f"{exp}/summary.parquet")))


def kill_node(pid: int, name: str) -> None:
    """The machine of a node dies: SIGKILL every process of the node. Its `ray start` session (process group
    of `ray start`, GCS/raylet/agents) is not enough: Ray 2.60 gives each worker process its own process group,
    and a trial left running would go on for a few epochs, reporting to the driver, before noticing that its
    raylet is gone."""
    pids = marked_pids(name)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    sigkill(pids)
    sweep(name)
