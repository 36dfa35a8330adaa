"""Epoch costs timed alone: the cost model a replay charges instead of a table's recorded seconds.

    python bench/epoch_cost.py --table bench/results/grid_synth.parquet [--repeats 3]

A table's seconds (bench/record_grid.py) were taken in two processes beside other work, so they follow the machine's
load and the grid's order more than the work. Here, for each combination of the table's grid keys that set how
much work an epoch is (COST_KEYS; the others, such as lr or temperature, change no FLOP), the first configuration of
the table with those values trains all its epochs in this process alone (one torch thread, the table's data),
``--repeats`` times with seeds 0, 1, ...; the model is the median over repeats of each epoch's train + eval seconds.
Writes bench/results/epoch_cost_<table>.json (the keys, each combination's seconds per epoch, every repeat, the load
average before and after); ``replay_table.Table.with_costs`` charges it, and the table file keeps its recorded seconds.
Run it on a quiet machine: the figures are only as quiet as the machine was.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

import record_grid  # noqa: E402
from common import results_dir, write_result  # noqa: E402

COST_KEYS = ("arch", "context_length", "batch_size", "d_model", "n_layers", "n_heads", "d_ff", "lstm_layers",
             "epochs", "hard_negatives", "precision", "eval_batch_size", "train_eval_windows")  # an epoch's work


def data_source(meta: dict) -> str:
    """The table's data: a store path, or a synthetic store made again from its spec ("... A:C:D:S:SEED")."""
    spec = meta["data"].split()[-1]
    return record_grid.synth_store(spec) if spec.count(":") == 4 and not Path(spec).exists() else spec


def timed(candidates: list[dict], fixed: dict, repeats: int) -> list[list[float]]:
    """Each epoch's train + eval seconds of ``repeats`` runs (seeds 0, 1, ...) of the first candidate configuration
    whose every run trains all its epochs (a run stopped by a non-finite loss has too few to time)."""
    for config in candidates:
        epochs = {**fixed, **config}["epochs"]
        got = [[r["train_seconds"] + r.get("eval_seconds", 0.0) for r in record_grid._run((0, seed, config, fixed))]
               for seed in range(repeats)]
        if all(len(g) == epochs for g in got):
            return got
    raise SystemExit(f"error: no configuration with {candidates[0]} trained all its epochs: nothing to time")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", required=True)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    from tune_p7.tuning.replay_table import Table

    table = Table.read(a.table)
    fixed, keys, configs = record_grid.grid_of(yaml.safe_load(table.meta["space"])["params"], a.table)
    cost_keys = [k for k in keys if k in COST_KEYS]
    combos: dict[tuple, list[dict]] = {}
    for c in configs:  # each combination's configurations, in grid order
        combos.setdefault(tuple(c[k] for k in cost_keys), []).append(c)
    record_grid._init(data_source(table.meta))
    load_before, t0, runs = os.getloadavg()[0], time.perf_counter(), []
    for values, candidates in combos.items():
        repeats = timed(candidates, fixed, a.repeats)
        runs.append({"values": dict(zip(cost_keys, values)), "seconds": np.median(repeats, axis=0).tolist(),
                     "repeats": repeats})
        print(f"{dict(zip(cost_keys, values))}: {' '.join(f'{s:.3f}' for s in runs[-1]['seconds'])} s per epoch",
              flush=True)
    name = f"epoch_cost_{Path(a.table).stem}"
    write_result(name, {"table": a.table, "keys": cost_keys, "runs": runs, "repeats": a.repeats,
                        "loadavg_1min": {"before": load_before, "after": os.getloadavg()[0]},
                        "wall_s": time.perf_counter() - t0, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")},
                 quick=False)
    print(f"wrote {results_dir(False) / (name + '.json')}")


if __name__ == "__main__":
    main()
