"""The harness of tests/test_cluster.py: a real Ray cluster of two hosts (tests/netns_hosts.py: a network and a
mount namespace each, joined by a veth pair; or, where namespaces cannot be made, two loopback "hosts" on this
machine), a head node started by scripts/cluster_head.sh and a worker node kept running by scripts/supervise.sh
around scripts/cluster_worker.sh, moto's S3 server on the head host as the only storage both hosts share, and
`python tune_p7/search.py --address ...` (or scripts/cluster_submit.sh) as the driver on the head host.

On namespace hosts the worker sees neither the checkout nor the head's files: tune_p7 is installed there
non-editable (``pip install --target``, from a copy of the checkout) and the scripts copied, as on a machine of
its own; each host has its own /tmp, /dev/shm and HOME, so the scripts run with their default ports and folders.
On loopback hosts (the fallback) every node runs with ``--node-ip-address 127.0.0.2`` (Ray 2.60 rewrites
127.0.0.1 given to ``ray start`` into the machine's routable address; 127.0.0.2 is kept), free ports and private
temp folders, as before the namespaces.

Token authentication uses a token made for this run (``RAY_AUTH_MODE=token`` + ``RAY_AUTH_TOKEN`` on every node
and driver). Processes end by their own ids: the supervisor loop (SIGTERM), scripts/cluster_stop.sh, then SIGKILL
to any process still carrying this run's marker variable and, on namespace hosts, to every process left in a
host's namespace, which removes the namespaces. Never ``ray stop``, never a kill by name.
"""
from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO
from local_processes import (MARKER, MARKER_VAR, NODE_VAR, free_port, free_range, marked_pids, sigkill, stop, sweep,
                             tail)

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
    subprocess.run([sys.executable, "-m", "tune_p7.data.synth", "--out", str(out), "--articles", str(articles),
                    "--chunks-per-article", "16", "--dim", "32", "--forward-signal", "2.0"],
                   check=True, capture_output=True, cwd=REPO, timeout=120)
    return out


def private_env() -> dict:
    """The environment of every node and driver: token auth with this run's token, the process marker, and
    free ports for the two Prometheus exporters of a head node (fixed 44217/44227 by default)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_"))}
    env.update({"PATH": f"{BIN}:{os.environ.get('PATH', '')}",  # not a shim that needs the real HOME
                "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN, MARKER_VAR: MARKER, "PYTHONUNBUFFERED": "1",
                "RAY_USAGE_STATS_ENABLED": "0", "RAY": RAY, "PYTHON": sys.executable,
                "AUTOSCALER_METRIC_PORT": str(free_port()), "DASHBOARD_METRIC_PORT": str(free_port()),
                # `ray start --block` drains its node for up to 30 s on SIGTERM (for Serve); nothing to drain here
                "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"})
    return env


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

SHARED_MARKER = f"{MARKER}-shared"  # not MARKER: the cluster tests' sweeps must leave the shared node alone


@contextmanager
def shared_node(cpus: int = 2):
    """One Ray node for a whole test session's searches (scripts/cluster_head.sh: ``cpus`` CPUs on NODE_IP, this
    run's token, free ports, no dashboard); yields the environment a driver needs to join it, or {} (with a warning
    when the start failed) where NODE_IP cannot be bound or the node does not start: each search then starts its
    own local Ray. Ended by scripts/cluster_stop.sh, then whatever of it is left by its own marker.

    Without the dashboard the node costs about 25 CPU-s less over a suite (its start, 1.5 CPU-s a minute idle, its
    stop; docs/measurements.md); the tests of the dashboard run on nodes that have one (tests/test_dashboard.py,
    tests/test_cluster.py)."""
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
        r = script("cluster_head.sh", "--include-dashboard=false", env=head_env)
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


def s3_results(s3, exp: str) -> dict[str, list[dict]]:
    """Every trial's result.json rows, by trial folder."""
    out = {}
    for key in s3.keys(exp + "/"):
        if key.endswith("/result.json"):
            rows = []
            for line in s3.read(key).decode().splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a line being written
            out[key.split("/")[-2]] = rows
    return out


def summary(s3, exp: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(s3.read(f"{exp}/summary.parquet")))
