"""Wall time of a confirmation stage (top 3 configurations x 3 new seeds x 2 cross-fitting folds) on the shipped data.

    python bench/confirm.py [--quick]

Runs ``python tune_p7/search.py`` on data/pydocs.parquet with search_spaces/smoke.yaml (its model sizes, epochs
and scheduler: 4 trials, ASHA) and ``--confirm-top 3 --confirm-seeds 3`` (the space's 2 folds), 2 CPUs, one trial
per CPU, and
timestamps its output lines as they come:

- ``confirm_stage_s``: from the line "tune_p7: confirming ..." to the end of the process: the 18 runs at their
  full 4 epochs, collecting confirm.parquet and rebuilding summary.md;
- ``search_s``: from the start of the process to that line (Ray start, probe, the search, its summary);
- ``confirm_trial_s``: the confirmation trials' own training time (sum of their epochs' train + eval seconds),
  against which the stage's fixed costs (Ray's trial start-up, checkpoints, the summary) show.
--quick: top 1 x 1 seed x 2 folds, 2 epochs; written to bench/results/quick/ (not tracked).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from common import ROOT, parser, write_result

MARKER = "tune_p7: confirming"


def run(cmd: list[str]) -> tuple[float, float, str]:
    """(seconds to the confirmation marker line, seconds in all, output) of one search.py run."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    marked, out = None, []
    for line in proc.stdout:
        out.append(line)
        if marked is None and line.startswith(MARKER):
            marked = time.perf_counter() - start
    proc.wait()
    total = time.perf_counter() - start
    text = "".join(out)
    if proc.returncode != 0 or marked is None:
        raise SystemExit(f"search.py failed (exit {proc.returncode}) or never confirmed:\n{text[-4000:]}")
    return marked, total, text


def main(argv=None):
    a = parser(__doc__.splitlines()[0]).parse_args(argv)
    top, seeds = (1, 1) if a.quick else (3, 3)
    work = Path(tempfile.mkdtemp(prefix="tune_p7_bench_confirm_"))
    cmd = [sys.executable, str(ROOT / "tune_p7" / "search.py"), "--data", str(ROOT / "data" / "pydocs.parquet"),
           "--storage", str(work), "--name", "bench", "--num-cpus", "2", "--confirm-top", str(top),
           "--confirm-seeds", str(seeds), *(["--epochs", "2"] if a.quick else [])]
    try:
        search_s, total_s, _ = run(cmd)
        exp = work / "bench"
        rows = pd.read_parquet(exp / "confirm.parquet")
        trial_s = 0.0
        for f in exp.glob("confirm/*/result.json"):
            lines = [json.loads(line) for line in f.read_text().splitlines()]
            trial_s += sum(r["train_seconds"] + r["eval_seconds"] for r in lines if not r.get("resumed"))
        section = (exp / "summary.md").read_text().split("## Confirmed", 1)[1].splitlines()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stage = total_s - search_s
    out = {"quick": a.quick, "top": top, "seeds": seeds, "trials": len(rows), "epochs": int(rows["epoch"].max()),
           "completed": int((rows["status"] == "completed").sum()), "search_s": search_s, "confirm_stage_s": stage,
           "confirm_trial_s": trial_s, "stage_per_trial_s": stage / len(rows),
           "recommendation": next(line for line in section if line.startswith("**") and "Too few" not in line)}
    print(f"confirmation stage (top {top} x {seeds} seeds x 2 folds, {out['epochs']} epochs, smoke model, data/pydocs.parquet, "
          f"2 CPUs): {stage:.1f} s wall ({stage / len(rows):.1f} s per trial; the trials' own training and evaluation "
          f"{trial_s:.1f} s of trial time); the search before it {search_s:.1f} s\n{out['recommendation']}")
    print(write_result("confirm", out, quick=a.quick))  # --quick: bench/results/quick/, untracked


if __name__ == "__main__":
    main()
