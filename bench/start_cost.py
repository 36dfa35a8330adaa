"""What a search spends per trial beyond training: the default against a new worker process per trial.

    python bench/start_cost.py [--quick] [--rounds R] [--modes NAME=FLAGS ...]

Runs the real command, ``python tune_p7/search.py`` (a local Ray, the search as a Ray job; no probe, no
confirmation), on a tiny synthetic store (80 articles x 12 chunks, 32-d) whose trials are one epoch of a tiny model
(seeds of one configuration, 2 at a time), with FEW and with MANY trials, in each mode: the default and
``--no-reuse-actors`` (a new worker per trial, the default before issue 31). Each run is a process tree in a
cpuacct cgroup of its own (cgroup v1, or v2's cpu.stat; needs root): its counter holds the CPU of every process of
the run, exited ones included (the launcher, Ray's servers, the job's driver, each worker). The CPU per trial is
(cpu(MANY) - cpu(FEW)) / (MANY - FEW), so the fixed cost of a search (Ray's start, the job, the driver) cancels; the
same for wall time. A trial's own training CPU (``fit`` of the same configuration run bare in this process, after a
warm-up) is subtracted: what remains is the start cost (a worker's start and imports, or a reused worker's reset)
and Tune's per-trial bookkeeping. Beside it, where a new worker's CPU goes (worker_phases: imports, the first epoch
against the second, in a fresh process). Runs alternate (every mode with FEW, then with MANY, round after round); figures
are medians over rounds. CPU seconds barely depend on the machine's load; the wall times do.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, median, parser, spread, table, write_result

SEARCH = ROOT / "tune_p7" / "search.py"
ENV = dict(os.environ)  # what the searches get: tests/conftest.py (make_store) sets the tests' own
MODES = {"default": [], "fresh workers": ["--no-reuse-actors"]}
TINY = dict(d_model=32, n_layers=1, n_heads=4, d_ff=64, lstm_layers=1, batch_size=128, epochs=1, warmup_epochs=1,
            precision="fp32", threads=1)


# ------------------------------------------------------------------------------------------------ CPU of a tree
class CpuGroup:
    """A cpuacct cgroup for one process tree: ``preexec`` moves a child into it before it runs; ``close()`` waits for
    its processes to end (Ray's last ones stop after the command), removes it and returns their CPU seconds."""

    def __init__(self, name: str):
        v1, unified = Path("/sys/fs/cgroup/cpuacct"), next((p for p in (Path("/sys/fs/cgroup/unified"),
                                                                          Path("/sys/fs/cgroup"))
                                                              if (p / "cgroup.procs").exists() and
                                                              not (p / "cpuacct.usage").exists()), None)
        base = v1 if (v1 / "cpuacct.usage").exists() else unified
        if base is None or not os.access(base, os.W_OK):
            sys.exit("start_cost: needs a writable cpuacct cgroup (v1) or cgroup v2 hierarchy: run as root")
        self.path = base / name
        self.path.mkdir()
        self.v1 = base == v1

    def preexec(self) -> None:
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def seconds(self) -> float:
        if self.v1:
            return int((self.path / "cpuacct.usage").read_text()) / 1e9
        stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
        return int(stat["usage_usec"]) / 1e6

    def pids(self) -> list[int]:
        return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]

    def close(self, timeout: float = 60) -> float:
        deadline = time.monotonic() + timeout
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in self.pids():  # this run's own processes, left after the wait
            os.kill(pid, 9)
        while self.pids():
            time.sleep(0.1)
        seconds = self.seconds()
        self.path.rmdir()
        return seconds


# ------------------------------------------------------------------------------------------------ one search
def space_file(folder: Path, trials: int) -> Path:
    path = folder / f"space_{trials}.yaml"
    params = "\n".join(f"  {k}: {v}" for k, v in TINY.items() if k != "threads")
    path.write_text(f"num_samples: 1\nparams:\n{params}\n  seed: {{grid: {list(range(trials))}}}\n"
                    "scheduler: {name: fifo}\ngates: {drift: -2.0, margin: -2.0, grace_epochs: 1}\n"
                    "confirm: {top: 0}\nresources: {cpus_per_trial: 1}\n")
    return path


def search(folder: Path, store: Path, trials: int, flags: list[str], tag: str) -> tuple[float, float]:
    """(CPU seconds of the whole process tree, wall seconds) of one search."""
    group = CpuGroup(f"tune_p7_start_cost_{os.getpid()}_{tag}")
    try:
        args = [sys.executable, str(SEARCH), "--space", str(space_file(folder, trials)), "--data", str(store),
                "--storage", str(folder / "runs"), "--name", tag, "--no-probe", "--num-cpus", "2", *flags]
        env = {**ENV, "PYTHONPATH": str(ROOT)}
        t = time.perf_counter()
        r = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, preexec_fn=group.preexec)
        wall = time.perf_counter() - t
        if r.returncode != 0:
            sys.exit(f"start_cost: {' '.join(args)} exited {r.returncode}:\n{r.stderr[-3000:]}")
    finally:
        cpu = group.close()
    return cpu, wall


PHASES = """
import json, sys, time
t = [time.process_time()]
import ray
from ray import tune
t.append(time.process_time())
import torch
t.append(time.process_time())
import tune_p7.tuning.trainable
t.append(time.process_time())
from tune_p7.core.config import P7Config
from tune_p7.core.loop import fit
from tune_p7.data.loading import load
data, cfg = load(sys.argv[1]), P7Config.from_dict(json.loads(sys.argv[2]))
t.append(time.process_time())
fit(cfg, data, report=lambda m, s: t.append(time.process_time()))
names = ["ray, ray.tune", "torch", "the trainable's module", "data, config", "epoch 1", "epoch 2"]
print(json.dumps({**dict(zip(names, [b - a for a, b in zip(t, t[1:])])), "torch._dynamo": "torch._dynamo" in sys.modules}))
"""


def worker_phases(store: Path) -> dict:
    """CPU seconds of what a new trial worker does before its first epoch ends, phase by phase, in a new process
    (outside Ray: the worker's own start and Ray's actor creation come on top). Epoch 1 against epoch 2 shows what
    a first epoch costs beyond the next; ``torch._dynamo`` says whether training imported it (torch.optim's
    ``_disable_dynamo`` wrappers did, 1.2-1.9 CPU-s, until the loop took fastpath.AdamW)."""
    cfg = json.dumps({**TINY, "epochs": 2})
    r = subprocess.run([sys.executable, "-c", PHASES, str(store), cfg], capture_output=True, text=True, check=True,
                       env={**ENV, "PYTHONPATH": str(ROOT)})
    return json.loads(r.stdout.strip().splitlines()[-1])


def training_cpu(store: Path) -> float:
    """CPU seconds of one trial's training (``fit``: the model, one epoch, its evaluation), bare, warmed up."""
    from tune_p7.core.config import P7Config
    from tune_p7.core.loop import fit
    from tune_p7.data.loading import load

    data, cfg = load(str(store)), P7Config.from_dict(TINY)
    fit(cfg, data)
    t = time.process_time()
    fit(cfg, data)
    return time.process_time() - t


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=None, help="rounds [default: 2, --quick 1]")
    p.add_argument("--modes", nargs="+", metavar="NAME=FLAGS",
                   help='modes to compare instead of the default ones, e.g. "reused=--reuse-actors" "fresh="')
    a = p.parse_args(argv)
    rounds = a.rounds or (1 if a.quick else 2)
    few, many = (1, 4) if a.quick else (2, 10)
    modes = dict((m.split("=", 1)[0], m.split("=", 1)[1].split()) for m in a.modes) if a.modes else MODES
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import make_store

    runs = {name: {few: [], many: []} for name in modes}
    with tempfile.TemporaryDirectory(prefix="start_cost_") as tmp:
        folder = Path(tmp)
        store = make_store(folder / "small.parquet", articles=80, chunks=12, dim=32)
        train = training_cpu(store)
        phases = [worker_phases(store) for _ in range(rounds)]
        for r in range(rounds):
            for n in (few, many):
                for i, (name, flags) in enumerate(modes.items()):
                    cpu, wall = search(folder, store, n, flags, f"r{r}n{n}m{i}")
                    runs[name][n].append({"cpu_s": cpu, "wall_s": wall, "load": os.getloadavg()[0]})
                    print(f"round {r + 1} {name:14s} {n:2d} trials: {cpu:6.1f} CPU-s {wall:6.1f} s wall "
                          f"(load {os.getloadavg()[0]:.1f})", flush=True)
    out = {}
    for name in modes:
        per_cpu = [(b["cpu_s"] - a_["cpu_s"]) / (many - few) for a_, b in zip(runs[name][few], runs[name][many])]
        per_wall = [(b["wall_s"] - a_["wall_s"]) / (many - few) for a_, b in zip(runs[name][few], runs[name][many])]
        out[name] = {"cpu_per_trial_s": median(per_cpu), "cpu_per_trial_rounds": per_cpu,
                     "start_cpu_per_trial_s": median(per_cpu) - train, "wall_per_trial_s": median(per_wall),
                     "wall_per_trial_rounds": per_wall, "runs": runs[name]}
    rows = [{"mode": k, "CPU s/trial": v["cpu_per_trial_s"], "start CPU s/trial": v["start_cpu_per_trial_s"],
             "rounds": spread(v["cpu_per_trial_rounds"], ".2f"), "wall s/trial": v["wall_per_trial_s"]}
            for k, v in out.items()]
    phase = {k: median([p[k] for p in phases]) for k in phases[0] if k != "torch._dynamo"}
    print("a new worker's path, CPU s: " + ", ".join(f"{k} {v:.2f}" for k, v in phase.items()))
    print(f"training CPU of one trial, bare: {train:.2f} s\n" + table(rows))
    first = next(iter(modes))
    write_result("start_cost", {"few": few, "many": many, "rounds": rounds, "training_cpu_s": train,
                                "new_worker_phases_cpu_s": phase, "phase_rounds": phases,
                                "modes": out, "trial_start_cpu_s": out[first]["start_cpu_per_trial_s"],
                                "trial_start_cpu_s_by_mode": {k: v["start_cpu_per_trial_s"] for k, v in out.items()}},
                 quick=a.quick)


if __name__ == "__main__":
    main()
