"""Ports and processes on this machine for the cluster tests: free ports, listening sockets and process trees read
from /proc, and the processes this test run started (marked by an environment variable every child inherits),
ended by their ids only."""
from __future__ import annotations

import os
import random
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO

MARKER_VAR = "TUNE_P7_CLUSTER_TEST"
NODE_VAR = "TUNE_P7_CLUSTER_NODE"
MARKER = f"{os.getpid()}-{secrets.token_hex(4)}"

_taken: set[int] = set()

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


def marked_pids(node: str | None = None, marker: str = MARKER) -> list[int]:
    """Processes started by this test run (they carry MARKER_VAR=marker in their environment); with ``node``,
    only those of that Ray node (NODE_VAR=node: `ray start` and everything it and its raylet started)."""
    needles = [f"{MARKER_VAR}={marker}".encode()] + ([f"{NODE_VAR}={node}".encode()] if node else [])
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


def _cmdline(pid) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def raylet_of(gcs_address: str) -> str:
    """The pid of the raylet of the Ray node whose GCS is at ``gcs_address`` (HOST:PORT)."""
    found = [p for p in os.listdir("/proc") if p.isdigit() and "/raylet " in _cmdline(p)
             and f"--gcs-address={gcs_address} " in _cmdline(p)]
    assert found, f"no raylet of {gcs_address} on this machine"
    return found[0]


def trial_workers(raylet: str, seen: set, done) -> None:
    """Until ``done`` (a threading.Event) is set, add to ``seen`` the pid of every trial worker (a process titled
    ray::ImplicitFunc) under ``raylet``, polled every 0.2 s from /proc: a worker that Tune starts and ends before
    it runs a trial (1.5-3 s of its start) is seen too."""
    while not done.is_set():
        seen.update(p for p in process_tree(int(raylet)) if _cmdline(p).startswith("ray::ImplicitFunc"))
        done.wait(0.2)


def tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"
