"""A real Slurm of two hosts for tests/test_slurm.py: Debian's slurm-wlm and munge, one ``slurmd`` per host
(tests/netns_hosts.py: a network and a mount namespace each, joined by a veth pair in 198.18.0.0/15), the
controller on the first host, a minimal generated slurm.conf (proctrack/linuxproc, task/none: no cgroups).

Each ``slurmd`` runs in a PID namespace of its own with its own /proc, so what its jobs see as "this node" is that
host only: `ray symmetric-run` refuses a node where it finds a Ray process and ends with `ray stop`, which stops
every Ray process it can see. ``munged`` runs on this machine with its socket in the folder both
hosts share (the cluster's "shared filesystem": also the checkout, the search's storage and the job logs). Every
process ends by its id: the hosts' processes with their namespaces (netns_hosts.end), munged by its pid.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

import netns_hosts as nh
from cluster_harness import BIN
from conftest import REPO
from local_processes import spawn, stop, tail, wait_for

SBATCH = REPO / "deploy" / "slurm" / "tune_p7.sbatch"
TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "sinfo", "unshare")
NODES = ("p7-head", "p7-worker")
# PID 1 of a host's PID namespace: runs slurmd and reaps every orphan (Ray's daemonized servers end up its
# children); with slurmd as PID 1 they stayed zombies and the job's `ray stop` waited its whole grace period for them
REAPER = "import os, subprocess, sys\np = subprocess.Popen(sys.argv[1:])\nwhile os.wait()[0] != p.pid:\n    pass"


def unavailable() -> str | None:
    """Why the two-host Slurm cannot run here, or None."""
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        return f"no {', '.join(missing)} (apt-get install slurm-wlm munge; .ci/run does)"
    return nh.unavailable()


def conf_text(shared: Path, hosts: list[nh.Host]) -> str:
    """A minimal slurm.conf: the controller on the first host, one node of 1 CPU per host, one partition."""
    nodes = "\n".join(f"NodeName={n} NodeAddr={h.ip} CPUs=1 State=UNKNOWN" for n, h in zip(NODES, hosts))
    return f"""ClusterName=p7test
SlurmctldHost={socket.gethostname()}({hosts[0].ip})
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={shared}/munge/munge.sock
StateSaveLocation={shared}/slurmctld
SlurmdSpoolDir=/tmp/slurmd
SlurmctldPidFile={shared}/slurmctld.pid
SlurmdPidFile=/tmp/slurmd.pid
SlurmctldLogFile={shared}/slurmctld.log
SlurmdLogFile={shared}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
SlurmdParameters=config_overrides
KillWait=5
{nodes}
PartitionName=p7 Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class Slurm:
    hosts: list[nh.Host]
    shared: Path  # the hosts' shared filesystem (same path on both and here)
    env: dict  # Slurm's clients' environment, and so the jobs'

    def run(self, *args, timeout: float = 30) -> subprocess.CompletedProcess:
        """A Slurm client command (sbatch, scontrol, scancel...) on the first host."""
        return subprocess.run(self.hosts[0].argv(list(args), cwd=str(REPO)), env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def submit(self, *args, env: dict | None = None) -> str:
        r = subprocess.run(self.hosts[0].argv(["sbatch", "--parsable", *map(str, args)], cwd=str(REPO)),
                           env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """The job's fields from `scontrol show job -o` (JobState, NodeList, ExitCode, StdOut...)."""
        r = self.run("scontrol", "show", "job", "-o", job_id)
        return dict(re.findall(r"(\w+)=(\S*)", r.stdout))

    def wait(self, job_id: str, states: tuple[str, ...], timeout: float) -> dict[str, str]:
        return wait_for(lambda: (f := self.job(job_id)).get("JobState") in states and f, timeout,
                        f"job {job_id} in {states} (now {self.job(job_id).get('JobState')}); "
                        f"{tail(self.shared / 'slurmctld.log', 1500)}", interval=0.5)


def munge(shared: Path) -> subprocess.Popen:
    """munged, its key (1 KiB random, mode 400), socket, pid and log in ``shared``/munge. As root, like the rest of
    this Slurm (SlurmUser=root), so it needs --force; as user munge it could not reach a folder under pytest's
    mode-700 temp root."""
    d = shared / "munge"
    d.mkdir(mode=0o711)  # clients need x to reach the socket
    (d / "munge.key").write_bytes(os.urandom(1024))
    (d / "munge.key").chmod(0o400)
    return subprocess.Popen(["munged", "--foreground", "--force", f"--socket={d}/munge.sock",
                             f"--key-file={d}/munge.key", f"--pid-file={d}/munged.pid", f"--log-file={d}/munged.log",
                             f"--seed-file={d}/munged.seed"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            start_new_session=True)


@contextmanager
def slurm(workdir: Path):
    """The two-host Slurm, both nodes idle; every process of it ended when the block ends."""
    why = unavailable()
    if why:
        pytest.skip(f"no two-host Slurm here: {why}")
    shared = workdir / "shared"
    shared.mkdir(parents=True)
    hosts, munged = [], None
    try:
        hosts = list(nh.make_pair(workdir, [], keep_on_head=[str(REPO), str(shared)],
                                  keep_on_worker=[str(REPO), str(shared)]))
        munged = munge(shared)
        wait_for(lambda: (shared / "munge" / "munge.sock").exists(), 20, "munged",
                 procs=[(munged, shared / "munge" / "munged.log")])
        conf = shared / "slurm.conf"
        conf.write_text(conf_text(shared, hosts))
        env = {"PATH": f"{BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
               "SLURM_CONF": str(conf), "HOME": hosts[0].tmp("home"), "PYTHONPATH": str(REPO),
               "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"}
        procs = [(spawn(hosts[0].argv(["slurmctld", "-D", "-f", conf]), env, shared / "slurmctld.out"),
                  shared / "slurmctld.out")]
        for name, h in zip(NODES, hosts):
            # its own PID namespace and /proc: the jobs' `ray stop` sees this host's processes only
            procs.append((spawn(h.argv(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", REAPER,
                                        "slurmd", "-D", "-N", name, "-f", conf]), env, shared / f"{name}.out"),
                          shared / f"{name}.out"))
        cluster = Slurm(hosts, shared, env)
        wait_for(lambda: cluster.run("sinfo", "-h", "-o", "%T %D").stdout.split() == ["idle", "2"], 60,
                 "both slurmd idle", procs=procs)
        yield cluster
    finally:
        errors = []
        for h in reversed(hosts):
            try:
                nh.end(h)
            except RuntimeError as exc:
                errors.append(str(exc))
        if munged is not None:
            stop(munged, grace=5)
        assert not errors, errors
