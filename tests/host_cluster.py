"""Two hosts (tests/netns_hosts.py), moto's S3 server on the head host and a Ray cluster across them, for
tests/test_cluster.py (see tests/cluster_harness.py for what runs where and how it ends)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import netns_hosts as nh
from cluster_harness import (BUCKET, MOTO_SERVER, NODE_IP, REPO, SCRIPTS, SEARCH, SMOKE, TOKEN, http_get,
                             node_env)
from local_processes import NODE_VAR, free_port, marked_pids, sigkill, spawn, stop, sweep, tail, wait_for

# the GCS marks a silent node dead after about threshold x (period + timeout) = 12 s instead of Ray's ~60 s;
# the raylet's own wait for a lost GCS (REJOIN) must be longer, so a cut node is marked dead before it gives up
HEALTH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
          "RAY_health_check_failure_threshold": "6"}
REJOIN = {"RESTART_SEC": "2",  # supervise.sh's pause between starts (systemd's RestartSec)
          # a raylet whose GCS went away (head restart) gives up after this, so its supervisor starts it again
          "RAY_gcs_rpc_server_reconnect_timeout_s": "20"}


@dataclass
class Lab:
    head: nh.Host
    worker: nh.Host
    fallback: str | None  # why the hosts are loopback ones, or None
    workdir: Path

    def worker_scripts(self) -> Path | str:
        return "/tmp/p7/scripts" if self.worker.isolated else SCRIPTS


@contextmanager
def lab(workdir: Path):
    """The two hosts; the worker gets tune_p7 installed non-editable and the scripts, as a machine of its own."""
    why = nh.unavailable()
    if why is None:
        hide = [str(REPO)] + nh.editable_targets()
        head, worker = nh.make_pair(workdir, hide, keep_on_head=[str(REPO)])
    else:
        warnings.warn(f"cluster tests on loopback nodes of this machine, not separate hosts: {why}")
        head, worker = (nh.Host(n, NODE_IP, workdir / f"{n}-host") for n in ("head", "worker"))
        for h in (head, worker):
            h.root.mkdir()
    head.env["PYTHONPATH"] = str(REPO)
    try:
        if worker.isolated:
            install_worker(workdir, worker)
        yield Lab(head, worker, why, workdir)
    finally:
        sweep()
        errors = []
        for h in (worker, head):
            try:
                nh.end(h)
            except RuntimeError as exc:
                errors.append(str(exc))
        assert not errors, errors
        assert all(not h.isolated or nh.netns_inode(h) is None for h in (head, worker)), "a namespace is left"


def install_worker(workdir: Path, worker: nh.Host) -> None:
    """tune_p7 installed non-editable (from a copy, so no build files land in the checkout) and the scripts."""
    src = workdir / "src"
    src.mkdir()
    shutil.copy(REPO / "pyproject.toml", src)
    shutil.copytree(REPO / "tune_p7", src / "tune_p7", ignore=shutil.ignore_patterns("__pycache__"))
    site = worker.root / "p7" / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                        "--target", str(site), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    shutil.copytree(SCRIPTS, worker.root / "p7" / "scripts")
    worker.env["PYTHONPATH"] = "/tmp/p7/site"


class S3:
    """moto's S3 server on the head host; the test reads it from inside that host's network namespace."""

    def __init__(self, host: nh.Host, port: int):
        self.host, self.endpoint = host, f"http://{host.ip if host.isolated else '127.0.0.1'}:{port}"

    def env(self, key: str = "test", secret: str = "test") -> dict:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
                "AWS_DEFAULT_REGION": "us-east-1"}

    def _client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="test",
                            aws_secret_access_key="test", region_name="us-east-1")

    def keys(self, prefix: str) -> list[str]:
        def run():
            out = []
            for page in self._client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
                out += [o["Key"] for o in page.get("Contents", [])]
            return out
        return self.host.call(run)

    def read(self, key: str) -> bytes:
        return self.host.call(lambda: self._client().get_object(Bucket=BUCKET, Key=key)["Body"].read())


@contextmanager
def s3_server(lab: Lab, env: dict):
    port = free_port()
    host = lab.head
    listen = host.ip if host.isolated else "127.0.0.1"
    log = lab.workdir / "moto.log"
    proc = spawn(host.argv([MOTO_SERVER, "-H", listen, "-p", str(port)]), {**env, **host.env}, log)
    s3 = S3(host, port)
    try:
        wait_for(lambda: host.call(lambda: s3._client().list_buckets()) is not None, 60, "moto S3 server",
                 procs=[(proc, log)])
        host.call(lambda: s3._client().create_bucket(Bucket=BUCKET))
        yield s3
    finally:
        stop(proc, grace=5)


@dataclass
class Cluster:
    lab: Lab
    env: dict  # a driver's environment on the head host (its S3 settings, the token)
    head_env: dict
    worker_env: dict
    gcs: int
    dashboard: int
    supervisor: subprocess.Popen | None = None
    node_ids: dict[str, str] = field(default_factory=dict)  # node name -> Ray node id

    @property
    def address(self) -> str:
        return f"{self.lab.head.ip}:{self.gcs}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard}"

    def ctl(self, node: str) -> Path:
        """The node's P7_NODE_DIR (pid file, log of the scripts), as the test sees it."""
        env = self.head_env if node == "head" else self.worker_env
        host = self.lab.head if node == "head" else self.lab.worker
        return host.outside(env.get("P7_NODE_DIR") or f"{env['HOME']}/.ray/tune_p7")

    def pid(self, node: str) -> int:
        return int((self.ctl(node) / f"{node}.pid").read_text())

    def get(self, path: str, token: str | None = TOKEN) -> tuple[int, bytes]:
        return self.lab.head.call(http_get, self.dashboard_url + path, token)

    def api(self, path: str, token: str | None = TOKEN):
        status, body = self.get(path, token)
        assert status == 200, f"{path}: HTTP {status} {body[:300]!r}"
        return json.loads(body)

    def alive_nodes(self) -> list[dict]:
        rows = self.api("/api/v0/nodes")["data"]["result"]["result"]
        return [n for n in rows if n["state"] == "ALIVE"]

    def script(self, node: str, name: str, *args, env: dict | None = None, timeout: float = 240):
        host = self.lab.head if node == "head" else self.lab.worker
        folder = SCRIPTS if node == "head" else self.lab.worker_scripts()
        env = env or (self.head_env if node == "head" else self.worker_env)
        return subprocess.run(host.argv([f"{folder}/{name}", *map(str, args)], cwd=str(REPO) if node == "head"
                                        else None), env=env, capture_output=True, text=True, timeout=timeout,
                              cwd=REPO, stdin=subprocess.DEVNULL)

    def start_head(self) -> None:
        r = self.script("head", "cluster_head.sh")
        assert r.returncode == 0, f"exit {r.returncode}: " + r.stdout + r.stderr + tail(self.ctl("head") / "head.log")
        assert f"{self.address}" in r.stdout, r.stdout
        self.node_ids["head"] = wait_for(lambda: (n := self.alive_nodes()) and n[0]["node_id"], 120, "the dashboard")

    def supervise_worker(self) -> None:
        """scripts/supervise.sh around cluster_worker.sh --foreground, with an environment file as systemd's."""
        envfile = self.lab.worker.outside(self.lab.worker.tmp("worker.env"))
        envfile.write_text("".join(f"{k}={v}\n" for k, v in self.worker_env.items()
                                   if k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "NUM_CPUS", "NODE_IP") or
                                   k.startswith("AWS_") or k in REJOIN))
        folder = self.lab.worker_scripts()
        log = self.lab.workdir / "supervisor.log"
        self.supervisor = spawn(self.lab.worker.argv([f"{folder}/supervise.sh", self.lab.worker.tmp("worker.env"),
                                                      f"{folder}/cluster_worker.sh", self.address, "--foreground"]),
                                self.worker_env, log)

    def wait_worker(self, timeout: float = 180) -> str:
        """The id of the (new) alive worker node."""
        def found():
            ids = {n["node_id"] for n in self.alive_nodes()} - {self.node_ids["head"]}
            return next(iter(ids), None)
        self.node_ids["worker"] = wait_for(found, timeout, "the worker node", interval=1,
                                           procs=[(self.supervisor, self.lab.workdir / "supervisor.log")])
        return self.node_ids["worker"]

    def stop_node(self, node: str) -> None:
        try:
            r = self.script(node, "cluster_stop.sh", node, timeout=120)
            print(r.stdout, r.stderr)
        except subprocess.TimeoutExpired:
            pass


def host_env(lab: Lab, base: dict, s3: S3, host: nh.Host, name: str) -> dict:
    """A node's environment: on a namespace host the scripts' defaults (ports, folders) and the host's HOME;
    on a loopback host free ports and private folders."""
    env = {**base, **host.env, **s3.env(key=f"{name}-key", secret=f"{name}-own-secret"), NODE_VAR: name}
    if host.isolated:
        return {**env, "NUM_CPUS": "1", "NODE_IP": host.ip}
    return node_env(env, name, lab.workdir)


@contextmanager
def cluster_on(lab: Lab, base: dict, s3: S3):
    """A head node on the head host and a supervised worker node on the worker host, 1 CPU each. Every node
    has its own storage key (moto takes any): the driver's secret must reach no trial."""
    head_env = {**host_env(lab, base, s3, lab.head, "head"), **HEALTH}
    worker_env = {**host_env(lab, base, s3, lab.worker, "worker"), **REJOIN}
    gcs, dash = (6379, 8265) if lab.head.isolated else (free_port(), free_port())
    if not lab.head.isolated:
        head_env.update({"GCS_PORT": str(gcs), "DASHBOARD_PORT": str(dash), "RAY_CLIENT_SERVER_PORT": str(free_port())})
    driver_env = {**base, **lab.head.env, **s3.env(secret=DRIVER_SECRET)}
    c = Cluster(lab, driver_env, head_env, worker_env, gcs, dash)
    try:
        c.start_head()
        c.supervise_worker()
        c.wait_worker()
        yield c
    finally:
        if c.supervisor:
            stop(c.supervisor, grace=60)
        for node in ("worker", "head"):
            c.stop_node(node)
        sweep()


DRIVER_SECRET = "driver-secret-" + TOKEN[:12]


def driver(c: Cluster, name: str, *args, space: Path | str = SMOKE, env: dict | None = None):
    """search.py on the head host (the checkout is there); its output in the test's folder."""
    log = c.lab.workdir / f"driver-{name}.log"
    cmd = [sys.executable, str(SEARCH), "--name", name, "--space", str(space), "--confirm-top", "0", "--no-plots",
           *map(str, args)]
    return spawn(c.lab.head.argv(cmd, cwd=str(REPO)), env or c.env, log), log


def refused(c: Cluster, name: str, *args, env: dict | None = None, timeout: float = 180) -> tuple[int, str]:
    """A driver expected to stop by itself: its exit code and output."""
    proc, log = driver(c, name, *args, env=env)
    try:
        proc.wait(timeout)
    finally:
        stop(proc, grace=5)
    return proc.returncode, log.read_text(errors="replace")


def kill_worker_machine(c: Cluster) -> None:
    """The worker machine dies: its supervisor and every process of its node, SIGKILL."""
    sigkill([c.supervisor.pid])
    c.supervisor.wait(10)
    pids = marked_pids("worker")
    sigkill(pids)
    sweep("worker")


def wait_dead(c: Cluster, node_id: str, timeout: float = 120) -> None:
    def dead():
        rows = c.api("/api/v0/nodes")["data"]["result"]["result"]
        return any(n["node_id"] == node_id and n["state"] == "DEAD" for n in rows)
    wait_for(dead, timeout, f"node {node_id[:8]} marked dead", interval=1)


def ray_log_text(host: nh.Host, temp_dir: str, pattern: str) -> str:
    """The text of the host's Ray logs matching ``pattern`` (its session folders under ``temp_dir``)."""
    root = host.outside(temp_dir)
    return "".join(p.read_text(errors="replace") for p in root.glob(f"session_*/logs/{pattern}"))


def since(t0: float) -> str:
    return f"{time.monotonic() - t0:.0f} s"
