"""Replay a search section against your own finished full grid: ``tune-p7 replay EXP --search FILE``.

EXP is a finished experiment of ``tune_p7/search.py`` whose space varies only grids (``{grid: [...]}``), under
``scheduler: {name: fifo}`` with the random (grid) search: every configuration ran all its epochs. Its results
become a table (each repeat of a configuration, ``num_samples`` > 1, counts as a seed) and FILE's ``search:``,
``scheduler:`` and ``num_samples`` (a space file; other keys are ignored) are replayed against it in simulated
time (tune_p7/tuning/replay.py), ``--replays`` times, beside random search under the same scheduler. Prints the median
trial-epochs and simulated seconds until the incumbent is within the best configuration's seed noise of the best.
"""
from __future__ import annotations

import argparse
import logging
import math
import warnings
from pathlib import Path

import numpy as np

from tune_p7 import cli
from tune_p7.errors import InputError
from tune_p7.experiment import RECORD, Experiment


def experiment_table(exp: Path):
    """The Table of a finished FIFO full-grid experiment; anything else raises InputError naming what is missing."""
    import itertools

    import pandas as pd

    from tune_p7.space.file import load_space
    from tune_p7.tuning.replay_table import Table

    record = Experiment(exp).record()
    if record is None:
        raise InputError(str(exp), f"not a tune_p7 experiment (no {RECORD})")
    space = load_space(record["space"])
    why = ("scheduler is " + space.scheduler.name if space.scheduler.name != "fifo" else
           "search is " + space.search.algorithm if space.search.model_based else
           "it has runs:" if space.runs else
           next((f"params.{k} is {next(iter(v))}" for k, v in space.params.items()
                 if isinstance(v, dict) and "grid" not in v), None))
    if why:
        raise InputError(str(exp), f"not a FIFO full-grid experiment ({why}): replay needs every configuration of a "
                                   "grid run to its last epoch")
    keys = [k for k, v in space.params.items() if isinstance(v, dict)]
    epochs = max(space.values_of("epochs"))
    rows = []
    for trial, lines in Experiment(exp).every_trial_results().items():
        seen = set()
        for r in lines:
            if r.get("resumed") or r.get("epoch") in seen or space.metric not in r:
                continue
            seen.add(r["epoch"])
            cfg = tuple(r["config"][k] for k in keys)
            rows.append({**{f"config/{k}": v for k, v in zip(keys, cfg)}, "trial": trial,
                         "epoch": int(r["epoch"]), space.metric: r[space.metric],
                         "train_seconds": r.get("train_seconds", r.get("time_this_iter_s", 1.0)),
                         "eval_seconds": r.get("eval_seconds", 0.0)})
    df = pd.DataFrame(rows)
    grid = set(itertools.product(*(space.params[k]["grid"] for k in keys)))
    done = df.groupby("trial")["epoch"].nunique() if len(df) else pd.Series(dtype=int)
    full = [t for t, n in done.items() if n >= epochs]
    configs = [tuple(g.iloc[0][[f"config/{k}" for k in keys]]) for _, g in df[df["trial"].isin(full)].groupby("trial")]
    missing = [c for c in grid if configs.count(c) < space.num_samples]
    if missing:
        raise InputError(str(exp), f"not a complete grid: {len(missing)} of {len(grid)} configurations did not run "
                                   f"all {epochs} epochs {space.num_samples} time(s) (replay needs all of them)")
    df = df[df["trial"].isin(full)]
    # the repeats of a configuration are its seeds 0, 1, ...
    df["seed"] = df.groupby([f"config/{k}" for k in keys])["trial"].transform(lambda t: pd.factorize(t)[0])
    return Table.from_frame(df, keys, space.metric, space.mode, {"space": Path(record["space"]).read_text()})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tune-p7 replay", description=__doc__.splitlines()[0])
    p.add_argument("experiment", help="a finished FIFO full-grid experiment folder")
    p.add_argument("--search", required=True, help="a space file whose search:, scheduler:, num_samples to replay")
    p.add_argument("--replays", type=int, default=20)
    p.add_argument("--workers", type=int, default=4, help="simulated workers (max_concurrent)")
    a = p.parse_args(argv)
    sections = {k: v for k, v in cli.read_yaml(a.search).items() if k in ("search", "scheduler", "num_samples")}
    table = experiment_table(Path(a.experiment))
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    from tune_p7.tuning.replay import describe, reach, replay, search_space

    n = sections.get("num_samples", 50)
    reference = {k: v for k, v in sections.items() if k != "search"}
    d = describe(table)
    print(f"{a.experiment}: {d['configurations']} configurations x {len(d['seeds'])} seed(s); best "
          f"{d['best_config']} = {d['best_value']:.4f} (seed noise {d['best_seed_noise']:.4f})")
    for name, secs in (("your search", sections), ("random, same scheduler", reference)):
        space = search_space(table.meta["space"], {**secs, "num_samples": n})  # FILE is checked as a space file
        got = [reach(table, replay(table, search_space(table.meta["space"], {**secs, "num_samples": n}, seed=r),
                                   n, a.workers, r)) for r in range(a.replays)]
        s, e = np.array(got).T
        sched = "hyperband" if space.search.algorithm == "bohb" else space.scheduler.name
        print(f"  {name:22s} ({space.search.algorithm}, {sched}, {n} trials, {a.workers} workers): reached in {np.isfinite(e).mean():.0%} of {a.replays} replays; "
              f"median {_fmt(np.median(e))} trial-epochs, {_fmt(np.median(s))} simulated s")
    return 0


def _fmt(x: float) -> str:
    return "never" if not math.isfinite(x) else f"{x:.0f}"


if __name__ == "__main__":
    cli.run(main)
