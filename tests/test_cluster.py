"""A real multi-node Ray cluster on this machine: a head and a worker node brought up by scripts/cluster_head.sh
and scripts/cluster_worker.sh (each a `ray start --block` process in a session of its own), moto's S3 server,
and `python tune_p7/search.py --address ...` (or scripts/cluster_submit.sh) as the driver.

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
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.cluster

SEARCH = REPO / "tune_p7" / "search.py"
SMOKE = REPO / "search_spaces" / "smoke.yaml"
SCRIPTS = REPO / "scripts"
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray") if (BIN / "ray").exists() else (shutil.which("ray") or "ray")
NODE_IP = "127.0.0.2"
BUCKET = "p7-cluster-test"
MARKER_VAR = "TUNE_P7_CLUSTER_TEST"
NODE_VAR = "TUNE_P7_CLUSTER_NODE"
MARKER = f"{os.getpid()}-{secrets.token_hex(4)}"
TOKEN = secrets.token_hex(32)  # like `ray get-auth-token --generate`, but private to this test run
WORKER_PORTS = 40  # per node: one port per Ray worker process (trials, retries, the driver)
# `moto_server` with one fix: moto 5.2.0-5.2.1 answer CompleteMultipartUpload with the root element
# <CompleteMultipartUploadResponse> instead of S3's <CompleteMultipartUploadResult> (getmoto/moto#10055, fixed
# upstream by #10056); boto3 does not care, but pyarrow (Ray's storage layer) takes it for an error embedded in a
# 200 response and every write fails. On a fixed moto the patch changes nothing.
MOTO_SERVER = """
import sys
from moto.core import serialize
_body = serialize.S3Serializer._serialize_body
def _fixed(self, body):
    if isinstance(body, dict) and "CompleteMultipartUploadResponse" in body:
        body = {"CompleteMultipartUploadResult": body["CompleteMultipartUploadResponse"]}
    return _body(self, body)
serialize.S3Serializer._serialize_body = _fixed
from moto.server import main
sys.exit(main(sys.argv[1:]))
"""

_taken: set[int] = set()


# ---------------------------------------------------------------- ports and processes

def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("", port))  # Ray's gRPC servers listen on every interface
        except OSError:
            return False
    return True


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        if port not in _taken:
            _taken.add(port)
            return port


def free_range(n: int) -> tuple[int, int]:
    """n consecutive free ports below the kernel's ephemeral range (so port-0 binds cannot take them later)."""
    for _ in range(500):
        base = random.randrange(20000, 32000 - n)
        ports = set(range(base, base + n))
        if not ports & _taken and all(_bindable(p) for p in ports):
            _taken.update(ports)
            return base, base + n - 1
    raise RuntimeError("no free port range")


def listeners() -> list[tuple[str, int, int]]:
    """(local address, port, socket inode) of every TCP socket in LISTEN state (what `ss -ltn` shows), from
    /proc/net; an IPv4-mapped IPv6 address is given as its IPv4 address."""
    found = []
    for name, width in (("tcp", 8), ("tcp6", 32)):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A":  # 0A: LISTEN
                continue
            host_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(host_hex)
            if width == 8:
                host = socket.inet_ntop(socket.AF_INET, raw[::-1])
            else:  # four little-endian 32-bit words
                host = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
                host = host.removeprefix("::ffff:") if host.startswith("::ffff:") and "." in host else host
            found.append((host, int(port_hex, 16), int(fields[9])))
    return found


def listening_hosts(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port``."""
    return {host for host, p, _ in listeners() if p == port}


def process_tree(root: int) -> set[int]:
    """``root`` and every process descended from it, from /proc (Ray's servers and workers are all children of
    the process that started them, even in process groups of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" (", 1)
        except OSError:
            continue
        children.setdefault(int(rest.rsplit(") ", 1)[1].split()[1]), []).append(int(pid))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo += children.get(pid, [])
    return tree


def listeners_of(pids: set[int]) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every listening TCP socket the processes ``pids`` hold open."""
    owner = {}
    for pid in pids:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    owner[int(target[8:-1])] = name
        except OSError:
            continue  # ended meanwhile
    return [(host, port, owner[inode]) for host, port, inode in listeners() if inode in owner]


def marked_pids(node: str | None = None) -> list[int]:
    """Processes started by this test run (they carry MARKER_VAR=MARKER in their environment); with ``node``,
    only those of that Ray node (NODE_VAR=node: `ray start` and everything it and its raylet started)."""
    needles = [f"{MARKER_VAR}={MARKER}".encode()] + ([f"{NODE_VAR}={node}".encode()] if node else [])
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            entries = Path(f"/proc/{d}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if all(n in entries for n in needles):
            found.append(int(d))
    return found


def sigkill(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def sweep(node: str | None = None) -> None:
    """SIGKILL whatever this run started (or, with ``node``, that node's processes) that is still alive."""
    for _ in range(5):
        pids = marked_pids(node)
        if not pids:
            return
        sigkill(pids)
        time.sleep(0.5)


def spawn(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=REPO, start_new_session=True)


def stop(proc: subprocess.Popen, grace: float = 20) -> None:
    """End a process this test spawned: SIGTERM to it, then SIGKILL to its process group (its own session)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


def wait_for(check, timeout: float, what: str, interval: float = 0.5, procs=()):
    """Poll ``check()`` until it returns something truthy; fail with ``what`` (and dead processes) on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # not up yet
            last = exc
        for p, log in procs:
            if p.poll() is not None:
                pytest.fail(f"{what}: process {p.args[:3]} exited with {p.returncode}:\n{tail(log)}")
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last!r})")


def tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


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


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def workdir():
    """A short private folder (Ray's unix sockets live under --temp-dir) removed at the end."""
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
    """The environment of every node and driver: token auth with this run's token, the process marker, and
    free ports for the two Prometheus exporters of a head node (fixed 44217/44227 by default)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_"))}
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN, MARKER_VAR: MARKER, "PYTHONUNBUFFERED": "1",
                "RAY_USAGE_STATS_ENABLED": "0", "RAY": RAY,
                "AUTOSCALER_METRIC_PORT": str(free_port()), "DASHBOARD_METRIC_PORT": str(free_port()),
                # `ray start --block` drains its node for up to 30 s on SIGTERM (for Serve); nothing to drain here
                "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"})
    return env


@pytest.fixture(scope="module")
def s3(workdir, base_env):
    """moto's S3 server on 127.0.0.1, a bucket, and the AWS_* environment that points pyarrow/boto3 at it."""
    pytest.importorskip("moto.server")
    import boto3

    port = free_port()
    proc = spawn([sys.executable, "-c", MOTO_SERVER, "-H", "127.0.0.1", "-p", str(port)], base_env,
                 workdir / "moto.log")
    try:
        env = {**base_env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
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


def node_env(env: dict, name: str, workdir: Path) -> dict:
    """What scripts/cluster_{head,worker}.sh read: 1 CPU, NODE_IP, a private temp dir, a free port for each
    of the node's listeners."""
    low, high = free_range(WORKER_PORTS)
    return {**env, NODE_VAR: name, "NUM_CPUS": "1", "NODE_IP": NODE_IP, "RAY_TEMP_DIR": str(workdir / name),
            "P7_NODE_DIR": str(workdir / f"{name}-ctl"),
            "NODE_MANAGER_PORT": str(free_port()), "OBJECT_MANAGER_PORT": str(free_port()),
            "DASHBOARD_AGENT_GRPC_PORT": str(free_port()), "DASHBOARD_AGENT_LISTEN_PORT": str(free_port()),
            "RUNTIME_ENV_AGENT_PORT": str(free_port()), "METRICS_EXPORT_PORT": str(free_port()),
            "MIN_WORKER_PORT": str(low), "MAX_WORKER_PORT": str(high)}


@pytest.fixture(scope="module")
def cluster(s3, workdir):
    """A head node and one worker node, 1 CPU each, started by the scripts with the S3 environment (Ray passes
    no environment variables to other nodes: they must be set on each `ray start`)."""
    env, _ = s3
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
        url = line.split("dashboard:", 1)[1].strip()
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


def test_job_submission_through_the_dashboard(cluster, s3, workdir, store):
    """scripts/cluster_submit.sh: `ray job submit` to the dashboard's job API (token required), the search's
    driver on the head node, the repository as the job's working directory, results in S3."""
    _, client = s3
    env = {**cluster.env, "DASHBOARD": cluster.dashboard_url}
    args = ["--storage", f"s3://{BUCKET}/exp", "--name", "job", "--data", store, "--epochs", 1, "--no-probe"]
    bad = script("cluster_submit.sh", *args, env={**env, "RAY_AUTH_TOKEN": secrets.token_hex(32)}, timeout=120)
    assert bad.returncode != 0 and "Invalid authentication token" in bad.stderr, bad.stderr[-2000:]
    assert script("cluster_submit.sh", "--data", store, env=env, timeout=60).returncode == 2  # no --storage
    r = script("cluster_submit.sh", *args, env=env, timeout=420)
    assert r.returncode == 0 and "succeeded" in r.stdout + r.stderr, r.stdout[-4000:] + r.stderr[-3000:]
    df = summary(client, "exp/job")
    assert len(df) == 4 and "errored" not in set(df["status"]), df


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
