"""The README's first command and the wide space, with the default options and with the fastest option set, side by
side (issue 31's goal: the default within 1.2x of the fastest on both, the first command within 30 s on 2 cores).

    python bench/side_by_side.py [--quick] [--rounds R] [--only first|wide] [--modes NAME=WORDS ...]

Each run is the real command, ``python tune_p7/search.py`` in a process of its own, timed from its start to its
exit, its CPU seconds counted over every process it started, Ray's included (a cgroup, as bench/start_cost.py: needs
root): the first command as the README gives it (the default space on the shipped data, with its probe and its
confirmation), and the shipped wide space (54 trials) on the tests' small store (80 articles x 12 chunks, 32-d)
with ``--epochs 2 --scheduler fifo --confirm-top 0 --no-probe``. The fastest set is everything the product offers
to go faster: the search in the command's own process (``TUNE_P7_IN_PROCESS=1``: no Ray job), without the plots
(``--no-plots``) and without the probe (``--no-probe``). The default runs with the first command's probe in its cache
(tune_p7.probe_cache: a search on data probed before); ``cold`` is the default with an empty probe cache (the first
search on a data set), first command only. --modes measures others instead, two of them named default and fastest
(its words: NAME=VALUE environment variables and flags; TUNE_P7_PROBE_CACHE=fresh, an empty probe cache for each
run). The searches get the environment the bench was given, without what tests/conftest.py sets for the tests.
Rounds rotate the order of the modes; a ratio is the median of the per-round ratios. Every run's folder is deleted
after it (a wide search leaves gigabytes of checkpoints). --quick: one round of the first command (about 75 s).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, median, parser, spread, table, write_result
from start_cost import CpuGroup

SEARCH = ROOT / "tune_p7" / "search.py"
# mode: environment variables (NAME=VALUE) and flags, for both commands; TUNE_P7_PROBE_CACHE=fresh: an empty probe
# cache for each run
MODES = {"default": "", "cold": "TUNE_P7_PROBE_CACHE=fresh", "fastest": "TUNE_P7_IN_PROCESS=1 --no-plots --no-probe"}
PROBES = "TUNE_P7_PROBE_CACHE"
# the searches get the environment this command was given: tests/conftest.py (make_store) sets the tests' own
ENV = dict(os.environ)
WIDE = ["--space", str(ROOT / "search_spaces" / "wide.yaml"), "--epochs", "2", "--scheduler", "fifo",
        "--confirm-top", "0", "--no-probe"]


def mode(words: str) -> tuple[dict, list[str]]:
    """(environment, flags) of a mode's words: NAME=VALUE words (NAME in capitals) set the environment, the others
    are flags."""
    env = [w for w in words.split() if re.match(r"[A-Z_][A-Z0-9_]*=", w)]
    return dict(w.split("=", 1) for w in env), [w for w in words.split() if w not in env]


def run(args: list[str], env: dict, storage: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of every process it started) of one search; exits with its stderr where it
    fails."""
    cmd = [sys.executable, str(SEARCH), *args, "--storage", str(storage)]
    group = CpuGroup(f"tune_p7_side_by_side_{os.getpid()}_{time.monotonic_ns()}")
    try:
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, preexec_fn=group.preexec,
                           env={**ENV, "PYTHONPATH": str(ROOT), **env})
        wall = time.perf_counter() - t
    finally:
        cpu = group.close()
    shutil.rmtree(storage, ignore_errors=True)
    if r.returncode != 0:
        sys.exit(f"side_by_side: {' '.join(cmd)} exited {r.returncode}:\n{r.stderr[-3000:]}")
    return wall, cpu


def warm_cache(path: Path) -> str:
    """A probe cache holding the first command's probe, as after a first search on the shipped data."""
    os.environ[PROBES] = str(path)
    from tune_p7.data.loading import load
    from tune_p7.search import probe_data
    from tune_p7.search_options import DEFAULT_DATA, DEFAULT_SPACE
    from tune_p7.space.file import load_space

    probe_data(load(DEFAULT_DATA), load_space(DEFAULT_SPACE))
    return str(path)


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=None, help="rounds [default: 3, --quick 1]")
    p.add_argument("--only", choices=["first", "wide"], help="one of the two commands")
    p.add_argument("--modes", nargs="+", metavar="NAME=WORDS",
                   help='modes instead of "default" and "fastest", e.g. "in-process=TUNE_P7_IN_PROCESS=1"; ratios '
                        'are against the one named fastest')
    a = p.parse_args(argv)
    rounds = a.rounds or (1 if a.quick else 3)
    commands = [a.only] if a.only else ["first"] if a.quick else ["first", "wide"]
    modes = dict(m.split("=", 1) for m in a.modes) if a.modes else MODES
    if "default" not in modes or "fastest" not in modes:
        sys.exit("side_by_side: --modes needs one named default and one named fastest")
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import make_store

    walls = {c: {m: [] for m in modes} for c in commands}
    cpus = {c: {m: [] for m in modes} for c in commands}
    names = list(modes)
    with tempfile.TemporaryDirectory(prefix="side_by_side_") as tmp:
        folder = Path(tmp)
        small = make_store(folder / "small.parquet", articles=80, chunks=12, dim=32)
        warm = warm_cache(folder / "cache")
        for r in range(rounds):
            for c in commands:
                for m in names[r % len(names):] + names[:r % len(names)]:
                    env, flags = mode(modes[m])
                    if c == "wide" and env.get(PROBES) == "fresh":
                        continue  # the wide command has no probe
                    if env.get(PROBES) == "fresh":
                        env[PROBES] = tempfile.mkdtemp(dir=folder)
                    args = flags if c == "first" else [*WIDE, "--data", str(small), *flags]
                    wall, cpu = run(args, {PROBES: warm, **env}, folder / "runs")
                    walls[c][m].append(wall)
                    cpus[c][m].append(cpu)
                    print(f"round {r + 1} {c:5s} {m:10s} {wall:6.1f} s {cpu:6.1f} CPU-s (1-minute load "
                          f"{os.getloadavg()[0]:.1f})", flush=True)
    out = {c: {"wall_s": walls[c], "cpu_s": cpus[c],
               "vs_fastest": {m: [x / f for x, f in zip(walls[c][m], walls[c]["fastest"])] for m in modes}}
           for c in commands}
    rows = [{"command": c, "mode": m, "wall s": spread(v["wall_s"][m], ".1f"), "CPU s": spread(v["cpu_s"][m], ".1f"),
             "/ fastest": median(v["vs_fastest"][m]), "rounds": spread(v["vs_fastest"][m], ".2f")}
            for c, v in out.items() for m in modes if v["wall_s"][m]]
    print(table(rows))
    headline = {}
    if "first" in out:
        headline.update(first_command_s=median(walls["first"]["default"]),
                        first_command_vs_fastest=median(out["first"]["vs_fastest"]["default"]))
        if "cold" in out["first"]["vs_fastest"]:
            headline["first_command_cold_vs_fastest"] = median(out["first"]["vs_fastest"]["cold"])
    if "wide" in out:
        headline["wide_vs_fastest"] = median(out["wide"]["vs_fastest"]["default"])
    write_result("side_by_side", {"rounds": rounds, "modes": modes, "commands": out, **headline}, quick=a.quick)


if __name__ == "__main__":
    main()
