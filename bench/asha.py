"""Trial-epochs saved by ASHA + gates against the full grid, and whether the best trial stays the same.

    python bench/asha.py [--quick]

Runs ``python tune_p7/search.py`` twice on one synthetic article store (planted forward signal) with a reduced
version of search_spaces/wide.yaml: its grids (context {3,5,7} x margin {0.05,0.10} x lambda {0.6,0.9}) times
arch {transformer, lstm}, a small model, the random draws fixed at mid-range (so both runs train the same
trials), 9 epochs, ASHA grace 1 / reduction 3. Once with the space's scheduler (ASHA + gates), once with
``--scheduler fifo`` (gates only). From each run's summary.parquet:

- ``asha_epochs_saved`` = 1 - sum(stopped_epoch under ASHA + gates) / (trials x epochs of the full grid);
  also against the FIFO run (what the gates alone already save);
- ``asha_same_best``: the top-ranked trial of both runs has the same configuration.
--quick: context {3,5} x margin {0.05,0.10}, transformer only, 4 epochs, reduction 2.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from common import ROOT, parser, table, write_result
from tune_p7.data.store import write_store
from tune_p7.data.synth import generate


def space(quick: bool) -> dict:
    params = {"epochs": 4 if quick else 9, "d_model": 64, "n_layers": 2, "n_heads": 4, "d_ff": 128, "lstm_layers": 1,
              "batch_size": 128, "warmup_epochs": 1, "lr": 2.0e-3, "lambda_min": 0.55, "lambda_max": 0.95,
              "w_margin": 0.5, "w_teacher": 0.2, "gate_threshold": 0.035, "gate_weak_weight": 0.3,
              "teacher_floor": 0.22, "temperature": 0.07, "train_eval_windows": 1024,
              "context_length": {"grid": [3, 5] if quick else [3, 5, 7]},
              "margin": {"grid": [0.05, 0.10]},
              "arch": {"grid": ["transformer"] if quick else ["transformer", "lstm"]}}
    if not quick:
        params["lambda_init"] = {"grid": [0.6, 0.9]}
    return {"description": "bench/asha.py: a reduced wide.yaml (grids only, draws fixed)", "num_samples": 1,
            "metric": "margin", "mode": "max", "params": params,
            "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2 if quick else 3, "brackets": 1},
            "gates": {"drift": 0.05, "margin": 0.10, "grace_epochs": 1}, "checkpoints": {"num_to_keep": 1},
            "resources": {"cpus_per_trial": 1}, "confirm": {"top": 0}}


def search(space_file: Path, data: Path, storage: Path, name: str, scheduler: str) -> tuple[pd.DataFrame, float]:
    cmd = [sys.executable, str(ROOT / "tune_p7" / "search.py"), "--space", str(space_file), "--data", str(data),
           "--storage", str(storage), "--name", name, "--scheduler", scheduler, "--num-cpus", "2"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"search.py ({scheduler}) failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return pd.read_parquet(storage / name / "summary.parquet"), wall


def varied_config(row: pd.Series, keys: list[str]) -> dict:
    return {k.removeprefix("config/"): row[k] for k in keys}


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    a = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="tune_p7_bench_asha_"))
    try:
        art, idx, vec = generate(240 if a.quick else 300, 24, 32, forward_signal=1.0, seed=0)
        data = work / "store.parquet"
        write_store(data, art, idx, vec)
        sp = space(a.quick)
        space_file = work / "space.yaml"
        space_file.write_text(yaml.safe_dump(sp))
        asha, asha_s = search(space_file, data, work / "results", "asha", "asha")
        fifo, fifo_s = search(space_file, data, work / "results", "fifo", "fifo")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    epochs = sp["params"]["epochs"]
    full = len(fifo) * epochs
    keys = [f"config/{k}" for k, v in sp["params"].items() if isinstance(v, dict)]
    best_asha, best_fifo = varied_config(asha.iloc[0], keys), varied_config(fifo.iloc[0], keys)
    out = {"trials": len(asha), "epochs": epochs, "full_grid_trial_epochs": full,
           "asha_trial_epochs": int(asha["stopped_epoch"].sum()), "fifo_trial_epochs": int(fifo["stopped_epoch"].sum()),
           "asha_status": asha["status"].value_counts().to_dict(), "fifo_status": fifo["status"].value_counts().to_dict(),
           "asha_wall_s": asha_s, "fifo_wall_s": fifo_s, "best_asha": best_asha, "best_fifo": best_fifo,
           "best_margin_asha": float(asha.iloc[0].get("best_margin")), "best_margin_fifo": float(fifo.iloc[0].get("best_margin")),
           "verdict_asha": asha.iloc[0]["verdict"], "verdict_fifo": fifo.iloc[0]["verdict"]}
    out["asha_epochs_saved"] = 1 - out["asha_trial_epochs"] / full
    out["asha_epochs_saved_vs_fifo"] = 1 - out["asha_trial_epochs"] / max(1, out["fifo_trial_epochs"])
    out["gates_only_epochs_saved"] = 1 - out["fifo_trial_epochs"] / full
    out["asha_same_best"] = best_asha == best_fifo
    top = lambda df: ", ".join(f"{k.removeprefix('config/')}={df.iloc[0][k]}" for k in keys)  # noqa: E731
    print(table([
        {"run": "full grid (no stopping)", "trial-epochs": full, "saved": 0.0, "wall s": "", "best": ""},
        {"run": "FIFO + gates", "trial-epochs": out["fifo_trial_epochs"], "saved": out["gates_only_epochs_saved"],
         "wall s": fifo_s, "best": top(fifo)},
        {"run": "ASHA + gates", "trial-epochs": out["asha_trial_epochs"], "saved": out["asha_epochs_saved"],
         "wall s": asha_s, "best": top(asha)}]))
    print(f"\nasha_epochs_saved = {out['asha_epochs_saved']:.2f} (target >= 0.60), asha_same_best = "
          f"{out['asha_same_best']}; {len(asha)} trials x {epochs} epochs")
    write_result("asha", out, quick=a.quick)


if __name__ == "__main__":
    main()
