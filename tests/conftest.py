"""Shared fixtures: small synthetic article stores and a small model config."""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Before anything loads torch (libgomp reads it then), for this process and every one it starts (xdist workers,
# searches, the session's Ray node): two pytest workers and their searches share two cores, and OpenMP threads
# that spin-wait at the end of each parallel region burn the CPU the other side needs (docs/measurements.md)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# the searches' probes are kept in a cache of this run (tune_p7.probe_cache), not in the user's; the processes this
# one starts (xdist workers, searches) use the same
if "TUNE_P7_PROBE_CACHE" not in os.environ:
    os.environ["TUNE_P7_PROBE_CACHE"] = tempfile.mkdtemp(prefix="tune_p7_test_probes_")
    atexit.register(shutil.rmtree, os.environ["TUNE_P7_PROBE_CACHE"], True)

import pytest  # noqa: E402

from tune_p7.core.config import P7Config
from tune_p7.data.store import write_store
from tune_p7.data.synth import generate

REPO = Path(__file__).resolve().parent.parent
SMALL = dict(d_model=64, n_layers=2, n_heads=4, d_ff=128, lstm_layers=1, batch_size=64, lr=2e-3, threads=1,
             warmup_epochs=1, epochs=3, precision="fp32")


def _module_scoped(item) -> bool:
    return any(d.scope == "module" for defs in item._fixtureinfo.name2fixturedefs.values() for d in defs)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config, items):
    """Work units for the two xdist workers (pyproject's ``-n 2 --dist loadgroup --no-loadscope-reorder``): the
    multi-host cluster tests are one unit (they share module-scoped clusters and mostly wait), a module with a
    module-scoped fixture is one unit (its search or cluster is set up once), every other test is a unit of its
    own. A worker takes the next unit when it is nearly done with its own, so both cores stay busy to the end:
    the cluster unit first, then the other shared units, the tests that start Ray or a search, the quick rest."""
    def rank(item):
        if item.get_closest_marker("cluster"):
            return 0
        return 1 if _module_scoped(item) else 2 if item.get_closest_marker("ray") else 3

    for item in items:
        if item.get_closest_marker("cluster") or "shared_ray" in item.fixturenames:  # the fast tier leaves these out
            item.add_marker(pytest.mark.ray)
        if item.get_closest_marker("cluster"):
            item.add_marker(pytest.mark.xdist_group("cluster"))
        elif _module_scoped(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    items.sort(key=rank)  # stable: in their usual order within each rank


def small_config(**changes) -> P7Config:
    return P7Config.from_dict({**SMALL, **changes})


def make_store(path, articles=300, chunks=24, dim=64, signal=2.0, seed=0):
    a, i, v = generate(articles, chunks, dim, signal, seed)
    write_store(path, a, i, v, dtype="float32")
    return path


@pytest.fixture(scope="session")
def strong_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("data") / "strong.parquet", signal=2.0)


@pytest.fixture(scope="session")
def flat_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("data") / "flat.parquet", signal=0.0)


@pytest.fixture(scope="session")
def small_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("data") / "small.parquet", articles=80, chunks=12, dim=32)


@pytest.fixture(scope="session")
def shared_ray():
    from cluster_harness import shared_node  # it imports this module

    with shared_node(cpus=2) as env:
        yield env


@pytest.fixture
def ray_cluster(shared_ray, monkeypatch):
    """Searches in the test join the session's one Ray node (search.py takes $RAY_ADDRESS as its --address) instead
    of starting and stopping a local Ray each, which costs about 10 s a search on 2 cores. Tests of the local start
    itself (the README's command, its loopback-only servers) do not use it."""
    for k, v in shared_ray.items():
        monkeypatch.setenv(k, v)
    return shared_ray.get("RAY_ADDRESS")


def run_cli(*args, timeout=600, cwd=None, **kw) -> subprocess.CompletedProcess:
    """Run a command line with this Python, capturing text output."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **kw.pop("env", {})}
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or REPO, env=env, **kw)


def kill_when(args, exp: Path, checkpoint: str, trials: int = 2, settle: float = 0.0, timeout: float = 300) -> None:
    """Start the command line ``args`` (a search), wait until ``trials`` trials of experiment ``exp`` have written
    ``checkpoint`` (e.g. checkpoint_000002), wait ``settle`` s more, then SIGKILL the driver (and the local Ray, if
    it started one), with no cleanup: the fault a resume must survive. Its trials end with it."""
    proc = subprocess.Popen(list(map(str, args)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=REPO, start_new_session=True)
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and len(list(exp.glob(f"*/{checkpoint}"))) < trials and proc.poll() is None:
            time.sleep(0.5)
        assert proc.poll() is None, f"the search ended (exit {proc.returncode}) before the kill"
        assert len(list(exp.glob(f"*/{checkpoint}"))) >= trials, "no checkpoints before the kill"
        time.sleep(settle)
    finally:
        kill_driver(proc, exp)


def kill_driver(proc: subprocess.Popen, exp: Path, quiet: float = 1.5, timeout: float = 60) -> None:
    """SIGKILL a search's driver started in a session of its own (and the local Ray, if it started one), then wait
    until nothing in ``exp`` has changed for ``quiet`` s. On a running Ray node the driver's trials end with it
    (an actor writing every 0.1 s stopped within 0.1 s of its driver's SIGKILL); the wait makes sure no write
    races what the test reads and the resume."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    def snapshot():
        seen = set()
        for f in exp.rglob("*"):
            try:
                st = f.stat()
            except FileNotFoundError:  # removed meanwhile: the next snapshot differs
                continue
            seen.add((str(f), st.st_size, st.st_mtime_ns))
        return seen

    before, deadline = snapshot(), time.time() + timeout
    while time.time() < deadline:
        time.sleep(quiet)
        now = snapshot()
        if now == before:
            return
        before = now
