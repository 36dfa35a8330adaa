"""Which search to use: every method replayed hundreds of times against recorded full grids, in simulated time.

    nice -n 19 python bench/search_compare.py [--tables bench/results/grid_synth.parquet ...] [--replays 100]
        [--budgets 25 50 100 200] [--workers 4] [--procs 2] [--until HH:MM] [--quick]

For each table (bench/record_grid.py: a full grid, every epoch of every configuration with 2 seeds), each method
(the ``search:`` / ``scheduler:`` sections of METHODS, applied to the table's own space file with every grid made a
choice) and each budget (num_samples), ``--replays`` replays (replay r: search seed r, table seeds drawn with r) on
``--workers`` simulated workers through tune_p7/tuning/replay.py: the real Tune scheduler and searcher objects, each epoch
charged its recorded seconds. Per replay: the simulated seconds and trial-epochs until the incumbent (the
configuration of the best value seen so far) is within the best configuration's own seed noise (the spread of its
two seeds' values) of the table's best (mean over seeds of each configuration's best epoch); inf if never.
Per (table, method, budget): the median over replays, a 95% bootstrap interval of that median, the share of
replays that got there. Headline per table at 100 trials: ``best_method_epochs_vs_random_asha``, the lowest ratio
of a model-based method's median trial-epochs to random + ASHA's (interval: bootstrap over both methods' replays).
Writes bench/results/search_compare[_TABLE].json (_TABLE: when one table is given), one anytime-regret PNG per
table, and the headline into summary.json.
Tasks run budget 100 first, then 25, 50, 200, replays interleaved across methods, so ``--until`` (stop starting
replays at that time) leaves every method with about the same number of replays.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing as mp
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import dump_json, results_dir, write_result  # noqa: E402

ASHA = {"name": "asha", "grace_period": 1, "reduction_factor": 3, "brackets": 1}
METHODS = {  # name -> the space file's sections
    "random_fifo": {"search": {"algorithm": "random"}, "scheduler": {"name": "fifo"}},
    "random_asha": {"search": {"algorithm": "random"}, "scheduler": ASHA},
    "tpe_asha": {"search": {"algorithm": "optuna"}, "scheduler": ASHA},  # Optuna 5.0's defaults: multivariate, liar
    "tpe_independent_asha": {"search": {"algorithm": "optuna", "multivariate": False, "constant_liar": False},
                             "scheduler": ASHA},
    "tpe_group_asha": {"search": {"algorithm": "optuna", "group": True}, "scheduler": ASHA},
    "hyperopt_asha": {"search": {"algorithm": "hyperopt"}, "scheduler": ASHA},
    "bohb": {"search": {"algorithm": "bohb", "reduction_factor": 3}},
}
BASELINE = "random_asha"
MODEL_BASED = [m for m in METHODS if not m.startswith("random")]
GRID_POINTS = 60  # regret curves are kept at this many trial-epoch points
_TABLES: dict = {}


def quiet() -> None:
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")


def _task(task: tuple) -> dict:
    from tune_p7.tuning.replay import Table, incumbent_regret, reach, replay, search_space

    quiet()
    path, method, budget, r, workers = task
    if path not in _TABLES:
        _TABLES[path] = Table.read(path)
    table = _TABLES[path]
    space = search_space(table.meta["space"], {**METHODS[method], "num_samples": budget}, seed=r)
    t = time.perf_counter()
    rep = replay(table, space, budget, workers=workers, seed=r)
    cpu = time.perf_counter() - t
    seconds, epochs = reach(table, rep)
    _, ep, regret = incumbent_regret(table, rep)
    return {"table": path, "method": method, "budget": budget, "replay": r, "reach_s": seconds,
            "reach_epochs": epochs, "wall_s": rep.wall, "trial_epochs": len(rep.events), "stuck": rep.stuck,
            "final_regret": float(regret[-1]), "replay_cpu_s": cpu,
            "regret_epochs": ep.tolist(), "regret": regret.tolist()}


def _pct(boots, q) -> list[float]:
    """Percentiles of bootstrap medians that may be inf (more than half of a resample never got there)."""
    finite = np.where(np.isinf(boots), np.sign(boots) * 1e300, boots)
    return [float(x) if abs(x) < 1e299 else math.copysign(math.inf, x) for x in np.percentile(finite, q)]


def median_ci(values, rng, n=2000) -> dict:
    v = np.asarray(values, float)
    boots = np.median(rng.choice(v, size=(n, len(v))), axis=1)
    lo, hi = _pct(boots, [2.5, 97.5])
    return {"median": float(np.median(v)), "ci95": [float(lo), float(hi)], "reached": float(np.isfinite(v).mean()),
            "replays": len(v)}


def ratio_ci(a, b, rng, n=2000) -> dict:
    """median(a) / median(b) with a bootstrap interval over both sets of replays."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ra = np.median(rng.choice(a, size=(n, len(a))), axis=1)
    rb = np.median(rng.choice(b, size=(n, len(b))), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        boots = ra / rb
    boots = np.where(np.isnan(boots), np.inf, boots)  # inf / inf: neither got there
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.median(a) / np.median(b)
    return {"median": float(np.inf if np.isnan(ratio) else ratio), "ci95": _pct(boots, [2.5, 97.5])}


def aggregate(runs: list[dict], tables: dict) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for path, info in tables.items():
        per = {}
        for method in METHODS:
            for budget in sorted({r["budget"] for r in runs}):
                rs = [r for r in runs if r["table"] == path and r["method"] == method and r["budget"] == budget]
                if not rs:
                    continue
                per.setdefault(method, {})[str(budget)] = {
                    "reach_epochs": median_ci([r["reach_epochs"] for r in rs], rng),
                    "reach_s": median_ci([r["reach_s"] for r in rs], rng),
                    "wall_s": float(np.median([r["wall_s"] for r in rs])),
                    "trial_epochs": float(np.median([r["trial_epochs"] for r in rs])),
                    "final_regret": median_ci([r["final_regret"] for r in rs], rng),
                    "stuck": sum(r["stuck"] for r in rs), "replay_cpu_s": float(sum(r["replay_cpu_s"] for r in rs))}
        head = {}
        base = [r["reach_epochs"] for r in runs if r["table"] == path and r["method"] == BASELINE and r["budget"] == 100]
        for method in MODEL_BASED:
            m = [r["reach_epochs"] for r in runs if r["table"] == path and r["method"] == method and r["budget"] == 100]
            if m and base:
                head[method] = ratio_ci(m, base, rng)
        best = min(head, key=lambda k: head[k]["median"]) if head else None
        out[Path(path).stem] = {**info, "methods": per, "epochs_vs_random_asha_at_100": head,
                                "best_method_epochs_vs_random_asha": {"method": best, **head[best]} if best else None}
    return out


def plot(runs: list[dict], path: str, budget: int, png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=150)
    rs = [r for r in runs if r["table"] == path and r["budget"] == budget]
    top = max((r["regret_epochs"][-1] for r in rs), default=1)
    x = np.linspace(1, top, 200)
    for method in METHODS:
        curves = [np.interp(x, r["regret_epochs"], np.minimum(r["regret"], 1e3), right=np.nan)
                  for r in rs if r["method"] == method]
        if not curves:
            continue
        grid = np.array(curves)
        grid = np.where(np.isnan(grid), np.array([c[~np.isnan(c)][-1] for c in grid])[:, None], grid)  # held
        line, = ax.plot(x, np.median(grid, axis=0), label=f"{method} ({len(curves)} replays)")
        ax.fill_between(x, *np.percentile(grid, [25, 75], axis=0), color=line.get_color(), alpha=0.15)
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("trial-epochs spent")
    ax.set_ylabel("regret of the incumbent (table's best - its value)")
    ax.set_title(f"{Path(path).stem}: anytime regret, {budget} trials, 4 workers (median, band 25-75%)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tables", nargs="+", default=[str(ROOT / "bench/results/grid_synth.parquet"),
                                                    str(ROOT / "bench/results/grid_pydocs.parquet")])
    p.add_argument("--replays", type=int, help="replays per table, method and budget (default 100; --quick 5)")
    p.add_argument("--budgets", type=int, nargs="+", help="trials (default 100 25 50 200; --quick 100 25)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--until", help="HH:MM: start no replay after this time (the figures say how many ran)")
    p.add_argument("--quick", action="store_true", help="5 replays, budgets 100 and 25, into bench/results/quick/")
    a = p.parse_args(argv)
    a.replays = a.replays or (5 if a.quick else 100)
    a.budgets = a.budgets or ([100, 25] if a.quick else [100, 25, 50, 200])
    from tune_p7.tuning.replay import Table, describe

    quiet()
    tables = {}
    for path in a.tables:
        t = Table.read(path)
        tables[path] = {**describe(t), "recording": {k: v for k, v in t.meta.items() if k != "space"}}
    tasks = [(path, m, b, r, a.workers) for b in a.budgets for r in range(a.replays) for path in a.tables
             for m in a.methods]
    deadline = None
    if a.until:
        hh, mm = map(int, a.until.split(":"))
        lt = time.localtime()
        deadline = time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday, hh, mm, 0, 0, 0, -1))
    runs, t0 = [], time.perf_counter()
    with mp.get_context("spawn").Pool(a.procs) as pool:
        pending = []
        for task in tasks:
            pending.append(pool.apply_async(_task, (task,)))
        for n, fut in enumerate(pending, 1):
            if deadline and time.time() > deadline:
                pool.terminate()
                print(f"--until {a.until}: stopped after {len(runs)} of {len(tasks)} replays", flush=True)
                break
            runs.append(fut.get())
            if n % 50 == 0:
                print(f"{n}/{len(tasks)} replays, {time.perf_counter() - t0:.0f} s", flush=True)
    figures = aggregate(runs, tables)
    folder = results_dir(a.quick)
    folder.mkdir(parents=True, exist_ok=True)
    for path in a.tables:  # the largest budget any replay finished
        done = [r["budget"] for r in runs if r["table"] == path] or [max(a.budgets)]
        plot(runs, path, max(done), folder / f"search_compare_{Path(path).stem}.png")
    lean = [{k: v for k, v in r.items() if k not in ("regret", "regret_epochs")} for r in runs]
    name = "search_compare" + ("_" + Path(a.tables[0]).stem if len(a.tables) == 1 else "")
    write_result(name, {"figures": figures, "methods": METHODS, "workers": a.workers,
                                    "replays_requested": a.replays, "budgets": a.budgets,
                                    "replays_done": len(runs), "compute_s": time.perf_counter() - t0,
                                    "runs": lean}, quick=a.quick)
    for name, f in figures.items():
        print(f"\n{name}: best {f['best_config']} = {f['best_value']:.4f}, seed noise {f['best_seed_noise']:.4f}")
        print(f"{'method':22s} {'budget':>6s} {'epochs to reach [95% CI]':>30s} {'reached':>7s} "
              f"{'sim s to reach':>14s} {'final regret':>12s}")
        for method, per in f["methods"].items():
            for b, v in sorted(per.items(), key=lambda kv: int(kv[0])):
                e = v["reach_epochs"]
                print(f"{method:22s} {b:>6s} {e['median']:>10.0f} [{e['ci95'][0]:.0f}, {e['ci95'][1]:.0f}]"
                      f"{'':>8s} {e['reached']:>7.2f} {v['reach_s']['median']:>14.0f} "
                      f"{v['final_regret']['median']:>12.4f}")
        for method, h in f["epochs_vs_random_asha_at_100"].items():
            print(f"  {method} / random_asha trial-epochs to reach, 100 trials: {h['median']:.2f} "
                  f"[{h['ci95'][0]:.2f}, {h['ci95'][1]:.2f}]")
    if not a.quick:
        merge_summary(figures)


def merge_summary(figures: dict) -> None:
    path = results_dir(False) / "summary.json"
    summary = json.loads(path.read_text()) if path.exists() else {}
    summary.setdefault("best_method_epochs_vs_random_asha", {}).update(
        {name: f["best_method_epochs_vs_random_asha"] for name, f in figures.items()})
    for name, f in figures.items():
        h = f["best_method_epochs_vs_random_asha"] or {}
        m = h.get("median", math.nan)
        summary.setdefault("targets", {})[f"best_method_epochs_vs_random_asha/{name}"] = {
            "target": "<= 0.5", "bench": "search_compare", "met": bool(math.isfinite(m) and m <= 0.5),
            "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    path.write_text(dump_json(summary))


if __name__ == "__main__":
    main()
