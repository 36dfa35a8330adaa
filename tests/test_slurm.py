"""deploy/slurm/tune_p7.sbatch on a real Slurm of two hosts (tests/slurm_cluster.py): one `sbatch` runs a search with
`ray symmetric-run` on both nodes of its allocation; cancelled mid-search and submitted again, it resumes the
experiment and finishes it. Nothing is mocked: slurmctld, two slurmd, munged, Ray and the search are the real
programs."""
from __future__ import annotations

import json
import sys
import time

import pandas as pd
import pytest

import netns_hosts as nh
from cluster_harness import synth
from conftest import REPO
from local_processes import wait_for
from slurm_cluster import SBATCH, slurm

pytestmark = pytest.mark.cluster

ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
ALLOC = ("--nodes=2", "--cpus-per-task=1")  # the script's #SBATCH lines, shrunk to the test's 1-CPU nodes
EPOCHS = 6
RAY_PROGRAMS = (b"raylet", b"gcs_server", b"ray::", b"ray/dashboard", b"symmetric")


def space(epochs: int) -> str:
    """Two trials (one per node: each has 1 CPU) of a small model; gates off, so every trial runs its epochs. With
    600 articles an epoch takes about a second on 2 cores: long enough that a cancel after a trial's second epoch
    lands mid-search."""
    return f"""num_samples: 1
metric: margin
mode: max
params: {{d_model: 64, n_layers: 1, n_heads: 4, d_ff: 128, lstm_layers: 1, epochs: {epochs}, warmup_epochs: 1,
         batch_size: 128, lr: 2.0e-3, arch: {{grid: [transformer, lstm]}}}}
scheduler: {{name: fifo}}
gates: {{drift: -1.0, margin: -1.0}}
checkpoints: {{num_to_keep: 1}}
resources: {{cpus_per_trial: 1}}
confirm: {{top: 0}}
"""


@pytest.fixture
def lab(tmp_path):
    with slurm(tmp_path) as cluster:
        data = synth(cluster.shared / "data.parquet", articles=600)
        (cluster.shared / "space.yaml").write_text(space(EPOCHS))
        env = {"P7_CHECKOUT": str(REPO), "P7_PYTHON": sys.executable, "P7_STORAGE": str(cluster.shared / "results"),
               "P7_DATA": str(data),
               # --storage-is-shared: a bind mount, not NFS. --no-reuse-actors: a new worker per trial; a reused one
               # can take the other trial before the other node's first worker has started (under load), and then
               # only the head trains
               "P7_SEARCH_ARGS": "--storage-is-shared --no-probe --no-reuse-actors --no-plots",
               "P7_HEAD_GONE_S": "8"}
        yield cluster, env


def run_job(cluster, env: dict, name: str) -> tuple[str, str]:
    """Submit the script for experiment ``name``; (job id, its log path)."""
    log = cluster.shared / f"{name}-%j.log"
    job = cluster.submit(*ALLOC, f"--output={log}", SBATCH,
                         env={**env, "P7_NAME": name, "P7_SPACE": str(cluster.shared / "space.yaml")})
    return job, str(log).replace("%j", job)


def finished(cluster, job: str, log: str, timeout: float = 300) -> str:
    state = cluster.wait(job, ENDED, timeout)
    out = open(log, errors="replace").read()
    assert state["JobState"] == "COMPLETED", f"{state}\n{out[-4000:]}"
    return out


def trial_rows(exp) -> dict[str, list[dict]]:
    """Each trial's result rows, by trial folder (a line being written is left out)."""
    rows = {}
    for f in exp.glob("*/result.json"):
        rows[f.parent.name] = []
        for line in f.read_text().splitlines():
            try:
                rows[f.parent.name].append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return rows


def ray_left(host: nh.Host) -> list[str]:
    found = []
    for pid in nh.processes_in(nh.netns_inode(host)):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if any(p in cmd for p in RAY_PROGRAMS):
            found.append(cmd.replace(b"\0", b" ").decode(errors="replace")[:120])
    return found


def test_a_job_cancelled_mid_search_and_submitted_again_finishes_the_search_on_both_nodes(lab):
    """The whole life of a Slurm search in one test (a job costs ~30 s of Ray start and stop on 2 cores): the first
    job runs until both trials have a checkpoint and is cancelled; the same script submitted again with the same
    P7_NAME resumes the experiment and finishes it, with the search's summary in the job's log."""
    cluster, env = lab
    job, log = run_job(cluster, env, "again")
    exp = cluster.shared / "results" / "again"
    # cancelled once a trial has trained 2 epochs, and Tune's experiment state names that trial's checkpoint
    wait_for(lambda: max(map(len, trial_rows(exp).values()), default=0) >= 2, 240, "a trial's second epoch")
    time.sleep(0.5)
    assert cluster.run("scancel", job).returncode == 0
    assert cluster.wait(job, ENDED, 60)["JobState"] == "CANCELLED"
    first = open(log, errors="replace").read()
    # both tasks started Ray: the head, and a worker that joined it
    assert "On head node" in first and "On worker node" in first, first[-3000:]
    trained = sum(map(len, trial_rows(exp).values()))
    assert trained < 2 * EPOCHS, "the search had finished before the cancel"
    # the tasks' SIGTERM trap stopped Ray: Slurm's linuxproc tracking misses Ray's daemonized servers
    wait_for(lambda: not any(ray_left(h) for h in cluster.hosts), 30, "Ray gone from both nodes")

    job2, log2 = run_job(cluster, env, "again")
    out = finished(cluster, job2, log2)
    assert "--name again --resume" in out and "On worker node" in out
    assert "summary: " in out and "| rank |" in out  # the search's own report, in the job's log
    summary = pd.read_parquet(exp / "summary.parquet")
    assert sorted(summary["config/arch"]) == ["lstm", "transformer"]
    assert (summary["status"] == "completed").all() and (summary["stopped_epoch"] == EPOCHS).all(), summary
    rows = trial_rows(exp)
    for trial in rows.values():
        seen = [r["epoch"] for r in trial]
        assert sorted(set(seen)) == list(range(1, EPOCHS + 1)), seen
        # a restored trial first reports its checkpoint's results again (``resumed``): rows the cancel lost
        trained = [r["epoch"] for r in trial if not r.get("resumed")]
        assert len(trained) == len(set(trained)), seen  # no epoch trained twice: the jobs went on from checkpoints
    # the trials ran on both nodes (each has 1 CPU)
    assert {r["node_ip"] for trial in rows.values() for r in trial} == {h.ip for h in cluster.hosts}
    assert not any(ray_left(h) for h in cluster.hosts)  # symmetric-run stopped Ray on both nodes at the end
