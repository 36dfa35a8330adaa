"""Hosts for the cluster tests: each a network namespace and a mount namespace of its own (as root), so a head and
a worker node behave like two machines; where namespaces cannot be made, plain loopback "hosts" on this machine.

A namespace host is one anchor process, ``unshare --net --mount --propagation private sh -c '...; exec sleep'``:
its namespaces live as long as it does (nothing is bound under /var/run/netns), so ending every process of the
host by its id removes them, with the veth pair between them. Inside:

- an address in 198.18.0.0/15 (reserved for network tests, RFC 2544; checked unused by this machine) on one end
  of a veth pair whose other end is in the other host's namespace: the pair never touches this machine's own
  network namespace, and loopback inside is the host's own;
- ``/tmp`` a bind of a private folder of the test (the host sees only its own; the test reads it from outside),
  ``/dev/shm`` (Ray's object store) a tmpfs, HOME=/tmp/home; a checkout under /tmp (as a CI clone may be) is
  bound back into the head's own /tmp at its path;
- ``hide``: tmpfs over folders the host must not see (the worker: the checkout, and the folder an editable
  install of tune_p7 points to).

Processes run in a host through ``nsenter -t ANCHOR -m -n``; the test reaches a host's servers (the dashboard, S3)
from a thread that joined the host's network namespace with setns(2) (network namespaces are per thread).
"""
from __future__ import annotations

import ctypes
import ipaddress
import os
import random
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CLONE_NEWNET = 0x40000000
TEST_NET = ipaddress.ip_network("198.18.0.0/15")


@dataclass
class Host:
    name: str
    ip: str  # the address other hosts reach it at
    root: Path  # this host's /tmp, seen from the test
    anchor: subprocess.Popen | None = None  # None: a loopback host (no namespaces)
    env: dict = field(default_factory=dict)  # what every process of the host gets on top of the caller's

    @property
    def isolated(self) -> bool:
        return self.anchor is not None

    def tmp(self, path: str = "") -> str:
        """A path under the host's /tmp, as the host sees it."""
        return ("/tmp" if self.isolated else str(self.root)) + (f"/{path}" if path else "")

    def outside(self, host_path: str) -> Path:
        """A path of the host's /tmp as the test sees it."""
        return self.root / Path(host_path).relative_to(self.tmp()) if self.isolated else Path(host_path)

    def argv(self, cmd: list[str], cwd: str | None = None) -> list[str]:
        if not self.isolated:
            return list(map(str, cmd))
        return ["nsenter", "-t", str(self.anchor.pid), "-m", "-n", f"--wd={cwd or '/tmp'}", *map(str, cmd)]

    def call(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` with its sockets in this host's network namespace."""
        if not self.isolated:
            return fn(*args, **kwargs)
        box: dict = {}

        def run():
            fd = os.open(f"/proc/{self.anchor.pid}/ns/net", os.O_RDONLY)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            try:
                box["value"] = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                box["error"] = exc

        t = threading.Thread(target=run, daemon=True)  # the thread ends with its namespace: never reused
        t.start()
        t.join()
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def link(self, up: bool) -> None:
        """Cut (or restore) this host's network link."""
        subprocess.run(self.argv(["ip", "link", "set", "dev", "p7veth", "up" if up else "down"]), check=True)


def unavailable() -> str | None:
    """Why network/mount namespaces cannot be made here, or None."""
    if os.environ.get("TUNE_P7_TEST_LOOPBACK") == "1":
        return "TUNE_P7_TEST_LOOPBACK=1"
    if os.geteuid() != 0:
        return "not root"
    for tool in ("unshare", "nsenter", "ip"):
        if not shutil.which(tool):
            return f"no `{tool}`"
    r = subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", "true"], capture_output=True,
                       text=True)
    if r.returncode != 0:
        return f"unshare failed: {r.stderr.strip()[:200]}"
    if used_test_addresses():
        return f"this machine already uses addresses in {TEST_NET}: {used_test_addresses()}"
    return None


def used_test_addresses() -> list[str]:
    """Addresses or routes of this machine's own network namespace inside TEST_NET."""
    out = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout + \
        subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    found = []
    for word in re.findall(r"\d+\.\d+\.\d+\.\d+(?:/\d+)?", out):
        net = ipaddress.ip_network(word, strict=False)
        if net.overlaps(TEST_NET):
            found.append(word)
    return found


def anchor(root: Path, hide: list[str], keep: list[str]) -> subprocess.Popen:
    """The process holding a new host's namespaces (see the module's docstring). A ``keep`` folder under /tmp (a
    checkout there, as a CI clone may be) is bound to the same path inside the host's own /tmp, so the host still
    sees it; a host that must not see it gets no ``keep``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "home").mkdir(exist_ok=True)
    hides = "".join(f" && mount -t tmpfs -o size=1m,mode=0755 tmpfs '{h}'" for h in hide if Path(h).is_dir())
    keeps = ""
    for k in (Path(k).resolve() for k in keep):
        if k.is_relative_to("/tmp"):
            (root / k.relative_to("/tmp")).mkdir(parents=True, exist_ok=True)
            keeps += f" && mount --bind '{k}' '{root / k.relative_to('/tmp')}'"
    script = (f"true{hides}{keeps} && mount --rbind '{root}' /tmp && mount -t tmpfs tmpfs /dev/shm && ip link set lo up "
              "&& echo ready && exec sleep infinity")
    proc = subprocess.Popen(["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", script],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, text=True)
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        raise RuntimeError(f"cannot make a host: {line} {proc.stdout.read()[:300]}")
    return proc


def make_pair(workdir: Path, hide_on_worker: list[str], keep_on_head: list[str],
              keep_on_worker: list[str] = ()) -> tuple[Host, Host]:
    """Two namespace hosts, head and worker, joined by a veth pair on a random /30 in TEST_NET; the head keeps
    seeing ``keep_on_head``, the worker ``keep_on_worker`` (a shared filesystem) and none of ``hide_on_worker``."""
    subnet = ipaddress.ip_network(f"198.{random.choice((18, 19))}.{random.randrange(256)}.{4 * random.randrange(64)}/30")
    head_ip, worker_ip = (str(a) for a in list(subnet.hosts())[:2])
    hosts = []
    try:
        for name, ip, hide, keep in (("head", head_ip, [], keep_on_head),
                                       ("worker", worker_ip, hide_on_worker, list(keep_on_worker))):
            hosts.append(Host(name, ip, workdir / f"{name}-host", anchor(workdir / f"{name}-host", hide, keep)))
        head, worker = hosts
        # made inside the head's namespace, the peer moved straight into the worker's: never in ours
        subprocess.run(head.argv(["ip", "link", "add", "p7veth", "type", "veth", "peer", "name", "p7veth", "netns",
                                  str(worker.anchor.pid)]), check=True, capture_output=True)
        for h in hosts:
            for cmd in (["ip", "addr", "add", f"{h.ip}/30", "dev", "p7veth"], ["ip", "link", "set", "p7veth", "up"]):
                subprocess.run(h.argv(cmd), check=True, capture_output=True)
        for h in hosts:
            h.env = {"HOME": h.tmp("home")}
        return head, worker
    except BaseException:
        for h in hosts:
            end(h)
        raise


def netns_inode(host: Host) -> int | None:
    try:
        return os.stat(f"/proc/{host.anchor.pid}/ns/net").st_ino
    except OSError:
        return None


def processes_in(inode: int) -> list[int]:
    """Processes whose network namespace is ``inode``."""
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}/ns/net").st_ino == inode:
                    found.append(int(d))
            except OSError:
                pass
    return found


def end(host: Host, timeout: float = 20) -> None:
    """SIGKILL every process in the host's network namespace (each by its id), the anchor last: the namespaces
    and the veth pair go with them. Raises if a process of the host survives."""
    if not host.isolated or host.anchor.poll() is not None:
        return
    inode = netns_inode(host)
    deadline = time.monotonic() + timeout
    while inode and time.monotonic() < deadline:
        pids = processes_in(inode)
        if not pids:
            break
        for pid in sorted(pids, key=lambda p: p == host.anchor.pid):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        host.anchor.poll()
        time.sleep(0.3)
    left = processes_in(inode) if inode else []
    if not left:
        host.anchor.wait(5)  # reaped: no zombie holds a pid
    if left:
        raise RuntimeError(f"host {host.name}: processes {left} still in its namespace")


def editable_targets() -> list[str]:
    """Folders an editable install of tune_p7 maps the package to (setuptools' __editable__ finder)."""
    import site

    found = []
    for d in site.getsitepackages():
        for f in Path(d).glob("__editable___tune_p7*finder.py"):
            found += [str(Path(p).parent) for p in re.findall(r"'tune_p7': '([^']+)'", f.read_text())]
    return found
