"""Which search to use: every method replayed hundreds of times against recorded full grids, in simulated time.

    nice -n 19 python bench/search_compare.py [--tables bench/results/grid_synth.parquet ...] [--replays 100]
        [--budgets 25 50 100 200] [--workers 4] [--procs 2] [--until HH:MM] [--quick]

For each table (bench/record_grid.py: a full grid, every epoch of every configuration with 2 or more seeds), each
method (the ``search:`` / ``scheduler:`` sections of METHODS, applied to the table's own space file with every grid
made a choice; ``default`` is the shipped wide space's, fixed before any replay; ``one_epoch_top_k`` the baseline of
replay.one_epoch_top_k with k a tenth of the budget) and each budget (num_samples), ``--replays`` replays (replay r:
search seed r, table seeds drawn with r) on ``--workers`` simulated workers through tune_p7/tuning/replay.py: the real
Tune scheduler and searcher objects, each epoch charged the seconds bench/epoch_cost.py timed alone for its
configuration's work (``--seconds recorded``: the table's own). A configuration's value is the mean over
its seeds of its best epoch. Per replay: the trial-epochs and simulated seconds until the incumbent (the configuration
of the best value seen so far) is within each target of the table's best (Table.targets: one pooled standard error,
the top 1% of configurations; and the best configuration's own seed spread, as before), inf if never; its normalised
regret after 25 ... 400 trial-epochs (every method at equal compute). Per (table, method, budget): medians over
replays with 95% bootstrap intervals and the share that got there. Headline per table at 100 trials:
``default_method_epochs_vs_random_asha``, the default's median trial-epochs to the first finite target (within one
pooled SE) over random + ASHA's, with an interval whose ends censored resamples would decide are left None; every
method's rank with a bootstrap interval. Writes bench/results/search_compare[_TABLE].json (_TABLE: when one table is
given), one normalised-regret PNG per table (over trial-epochs and over simulated seconds), and the headline and
ranks into summary.json.
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
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import dump_json, results_dir, write_result  # noqa: E402

ASHA = {"name": "asha", "grace_period": 1, "reduction_factor": 3, "brackets": 1}
WIDE = yaml.safe_load((ROOT / "search_spaces" / "wide.yaml").read_text())
METHODS = {  # name -> the space file's sections
    # the shipped wide space's search and scheduler, chosen before any replay (its seed left to replay r; its gates
    # not taken: every method runs with the table's own)
    "default": {"search": {k: v for k, v in WIDE["search"].items() if k != "seed"}, "scheduler": WIDE["scheduler"]},
    "random_fifo": {"search": {"algorithm": "random"}, "scheduler": {"name": "fifo"}},
    "random_asha": {"search": {"algorithm": "random"}, "scheduler": ASHA},
    "random_asha_rf2": {"search": {"algorithm": "random"}, "scheduler": {**ASHA, "reduction_factor": 2}},
    "random_asha_rf4": {"search": {"algorithm": "random"}, "scheduler": {**ASHA, "reduction_factor": 4}},
    "random_asha_3brackets": {"search": {"algorithm": "random"}, "scheduler": {**ASHA, "brackets": 3}},
    "tpe_asha": {"search": {"algorithm": "optuna"}, "scheduler": ASHA},  # Optuna 5.0's defaults: multivariate, liar
    "tpe_startup5_asha": {"search": {"algorithm": "optuna", "n_startup_trials": 5}, "scheduler": ASHA},
    "tpe_independent_asha": {"search": {"algorithm": "optuna", "multivariate": False, "constant_liar": False},
                             "scheduler": ASHA},
    "tpe_group_asha": {"search": {"algorithm": "optuna", "group": True}, "scheduler": ASHA},
    "hyperopt_asha": {"search": {"algorithm": "hyperopt"}, "scheduler": ASHA},
    "bohb": {"search": {"algorithm": "bohb", "reduction_factor": 3}},
    "one_epoch_top_k": None,  # every sampled configuration one epoch, then the best tenth to the end (replay.py)
}
DEFAULT, BASELINE = "default", "random_asha"
TARGETS = ("within_se", "top_1pct", "noise")  # the headline's first; "noise": the best configuration's seed spread
EQUAL_EPOCHS = (25, 50, 100, 200, 400)  # normalised regret of every method after this many trial-epochs
_TABLES: dict = {}


def quiet() -> None:
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")


def _task(task: tuple) -> dict:
    from tune_p7.tuning.replay import incumbent_regret, one_epoch_top_k, reach, regret_at, replay, search_space
    from tune_p7.tuning.replay_table import Table

    quiet()
    path, method, budget, r, workers, costs = task
    if path not in _TABLES:
        _TABLES[path] = Table.read(path).with_costs(json.loads(Path(costs).read_text())) if costs else Table.read(path)
    table = _TABLES[path]
    t = time.perf_counter()
    if METHODS[method] is None:
        rep = one_epoch_top_k(table, budget, max(1, budget // 10), workers=workers, seed=r)
    else:
        space = search_space(table.meta["space"], {**METHODS[method], "num_samples": budget}, seed=r)
        rep = replay(table, space, budget, workers=workers, seed=r)
    cpu = time.perf_counter() - t
    targets = {**table.targets(), "noise": table.best()[2]}
    reached = {k: reach(table, rep, targets[k]) if math.isfinite(targets[k]) else (math.nan, math.nan)
               for k in TARGETS}
    times, ep, regret = incumbent_regret(table, rep)
    regret = table.normalised(regret)  # 0 the best configuration, 1 the worst
    return {"table": path, "method": method, "budget": budget, "replay": r,
            **{f"reach_epochs_{k}": v[1] for k, v in reached.items()}, **{f"reach_s_{k}": v[0] for k, v in reached.items()},
            "wall_s": rep.wall, "trial_epochs": len(rep.events), "stuck": rep.stuck,
            "final_regret": float(regret[-1]), "replay_cpu_s": cpu,
            "regret_at": dict(zip(map(str, EQUAL_EPOCHS), regret_at(table, rep, EQUAL_EPOCHS))),
            "regret_epochs": ep.tolist(), "regret_times": times.tolist(), "regret": regret.tolist()}


def _ends(boots) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of bootstrap medians that may be inf, as order statistics (never an
    interpolation between a finite median and inf)."""
    return float(np.percentile(boots, 2.5, method="lower")), float(np.percentile(boots, 97.5, method="higher"))


def median_ci(values, rng, n=2000) -> dict:
    v = np.asarray(values, float)
    lo, hi = _ends(np.median(rng.choice(v, size=(n, len(v))), axis=1))
    return {"median": float(np.median(v)), "ci95": [lo, hi], "reached": float(np.isfinite(v).mean()),
            "replays": len(v)}


def ratio_ci(a, b, spent_a, spent_b, rng, n=2000) -> dict:
    """median(a) / median(b) of trial-epochs to reach, with a bootstrap interval over both sets of replays. A replay
    that never got there (inf) is censored: it would have got there after more than the ``spent`` trial-epochs it
    ran. So each median is known between a lower bound (censored replays counted at what they spent) and an upper
    one (at inf), the ratio between lower(a) / upper(b) and upper(a) / lower(b); the interval runs from the 2.5th
    percentile of the first to the 97.5th of the second over resamples, and an end that is 0 or inf is None (not
    identified). ``median`` is the ratio where censoring leaves it one number, else None beside ``median_bounds``."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    la, lb = np.where(np.isinf(a), spent_a, a), np.where(np.isinf(b), spent_b, b)
    ia, ib = rng.integers(len(a), size=(n, len(a))), rng.integers(len(b), size=(n, len(b)))
    with np.errstate(divide="ignore", invalid="ignore"):
        low = np.median(la[ia], axis=1) / np.median(b[ib], axis=1)  # inf baseline: 0
        high = np.median(a[ia], axis=1) / np.median(lb[ib], axis=1)  # inf method: inf
        bounds = [float(np.median(la) / np.median(b)), float(np.median(a) / np.median(lb))]
    lo, hi = _ends(low)[0], _ends(high)[1]
    return {"median": bounds[0] if bounds[0] == bounds[1] else None, "median_bounds": bounds,
            "ci95": [lo if lo > 0 else None, hi if math.isfinite(hi) else None],
            "censored": {"baseline_never": float(np.isinf(b).mean()), "method_never": float(np.isinf(a).mean())}}


def ranks(per_method: dict[str, list[float]], rng, n=2000) -> dict:
    """Each method's rank by median trial-epochs to reach (1 best; methods that never got there share the last
    ranks), with a 95% bootstrap interval over every method's replays."""
    import pandas as pd

    names = list(per_method)
    boots = np.array([[np.median(rng.choice(np.asarray(per_method[m], float), len(per_method[m]))) for m in names]
                      for _ in range(n)])
    r = pd.DataFrame(boots, columns=names).rank(axis=1, method="average").to_numpy()
    point = pd.Series({m: float(np.median(v)) for m, v in per_method.items()}).rank(method="average")
    return {m: {"rank": float(point[m]), "ci95": [float(x) for x in np.percentile(r[:, i], [2.5, 97.5])]}
            for i, m in enumerate(names)}


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
                    **{f"reach_epochs_{k}": median_ci([r[f"reach_epochs_{k}"] for r in rs], rng) for k in TARGETS},
                    **{f"reach_s_{k}": median_ci([r[f"reach_s_{k}"] for r in rs], rng) for k in TARGETS},
                    "normalised_regret_at_epochs": {e: median_ci([r["regret_at"][e] for r in rs], rng)
                                                    for e in map(str, EQUAL_EPOCHS)},
                    "wall_s": float(np.median([r["wall_s"] for r in rs])),
                    "trial_epochs": float(np.median([r["trial_epochs"] for r in rs])),
                    "final_regret": median_ci([r["final_regret"] for r in rs], rng),
                    "stuck": sum(r["stuck"] for r in rs), "replay_cpu_s": float(sum(r["replay_cpu_s"] for r in rs))}
        target = next((k for k in TARGETS if math.isfinite(info["targets"].get(k, info["best_seed_noise"]))), "noise")

        def at_100(method, key):
            return [r[key] for r in runs if r["table"] == path and r["method"] == method and r["budget"] == 100]

        done = {m: at_100(m, f"reach_epochs_{target}") for m in METHODS if at_100(m, "trial_epochs")}
        spent = {m: at_100(m, "trial_epochs") for m in done}
        head = {m: ratio_ci(v, done[BASELINE], spent[m], spent[BASELINE], rng) for m, v in done.items()
                if m != BASELINE and BASELINE in done}
        out[Path(path).stem] = {**info, "methods": per, "headline_target": target,
                                "epochs_vs_random_asha_at_100": head,
                                "ranks_at_100": ranks(done, rng) if done else {},
                                "default_method_epochs_vs_random_asha": {"method": DEFAULT, **head[DEFAULT]}
                                if DEFAULT in head else None}
    return out


def plot(runs: list[dict], path: str, budget: int, png: Path) -> None:
    """Normalised regret of the incumbent against trial-epochs and against simulated seconds: per method the median
    over replays (a replay holds its last value after it ends); the 25-75% band for the headline's two methods."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 5), dpi=120)
    rs = [r for r in runs if r["table"] == path and r["budget"] == budget]
    for ax, xkey, xlabel in ((axes[0], "regret_epochs", "trial-epochs spent"),
                             (axes[1], "regret_times", "simulated seconds (4 workers)")):
        x = np.linspace(min(r[xkey][0] for r in rs), max(r[xkey][-1] for r in rs), 200) if rs else []
        for colour, method in zip(plt.cm.tab20(np.linspace(0, 1, len(METHODS))), METHODS):
            curves = [np.interp(x, r[xkey], np.minimum(r["regret"], 1.0), left=1.0, right=r["regret"][-1])
                      for r in rs if r["method"] == method]
            if curves:
                headline = method in (DEFAULT, BASELINE)
                ax.plot(x, np.median(curves, axis=0), color=colour, lw=2.2 if headline else 1.2,
                        ls="-" if headline or not method.startswith("random") else "--",
                        label=f"{method} ({len(curves)} replays)")
                if headline:
                    ax.fill_between(x, *np.percentile(curves, [25, 75], axis=0), color=colour, alpha=0.15)
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("normalised regret of the incumbent (0 best, 1 worst)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{Path(path).stem}: anytime normalised regret, {budget} trials (median, band 25-75%)")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tables", nargs="+", default=[str(ROOT / "bench/results/grid_synth.parquet"),
                                                    str(ROOT / "bench/results/grid_pydocs.parquet")])
    p.add_argument("--replays", type=int, help="replays per table, method and budget (default 100; --quick 5)")
    p.add_argument("--budgets", type=int, nargs="+", help="trials (default 100 25 50 200; --quick 100 25)")
    p.add_argument("--first-replay", type=int, default=0,
                   help="seed of the first replay: replays FIRST..FIRST+R-1, e.g. fresh ones for a final run after "
                        "the methods were chosen on replays 0..R-1 [default: 0]")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--seconds", choices=("model", "recorded"), default="model",
                   help="epoch seconds charged: the cost model bench/epoch_cost.py measured alone "
                        "(bench/results/epoch_cost_<table>.json), or the table's recorded ones [default: model]")
    p.add_argument("--until", help="HH:MM: start no replay after this time (the figures say how many ran)")
    p.add_argument("--quick", action="store_true", help="5 replays, budgets 100 and 25, into bench/results/quick/")
    a = p.parse_args(argv)
    a.replays = a.replays or (5 if a.quick else 100)
    a.budgets = a.budgets or ([100, 25] if a.quick else [100, 25, 50, 200])
    from tune_p7.tuning.replay import describe
    from tune_p7.tuning.replay_table import Table

    quiet()
    tables = {}
    for path in a.tables:
        t = Table.read(path)
        tables[path] = {**describe(t), "recording": {k: v for k, v in t.meta.items() if k != "space"}}
    costs = {path: str(results_dir(False) / f"epoch_cost_{Path(path).stem}.json") if a.seconds == "model" else None
             for path in a.tables}
    missing = [c for c in costs.values() if c and not Path(c).exists()]
    if missing:
        raise SystemExit(f"error: no cost model {missing[0]}: run bench/epoch_cost.py --table TABLE, or --seconds "
                         "recorded")
    for path, c in costs.items():
        tables[path]["seconds"] = {"charged": a.seconds, "cost_model": c}
    tasks = [(path, m, b, r, a.workers, costs[path]) for b in a.budgets
             for r in range(a.first_replay, a.first_replay + a.replays) for path in a.tables
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
    # replays without the headline's 100 trials (e.g. --budgets 25 50) are written beside the headline's files
    suffix = "" if 100 in a.budgets else "_budgets_" + "_".join(map(str, sorted(a.budgets)))
    for path in a.tables:  # the largest budget any replay finished
        done = [r["budget"] for r in runs if r["table"] == path] or [max(a.budgets)]
        plot(runs, path, max(done), folder / f"search_compare_{Path(path).stem}{suffix}.png")
    lean = [{k: v for k, v in r.items() if k not in ("regret", "regret_epochs", "regret_times")} for r in runs]
    name = "search_compare" + ("_" + Path(a.tables[0]).stem if len(a.tables) == 1 else "") + suffix
    write_result(name, {"figures": figures, "methods": METHODS, "workers": a.workers,
                                    "replays_requested": a.replays, "first_replay": a.first_replay, "budgets": a.budgets,
                                    "replays_done": len(runs), "compute_s": time.perf_counter() - t0,
                                    "runs": lean}, quick=a.quick)
    for name, f in figures.items():
        print(f"\n{name}: best {f['best_config']} = {f['best_value']:.4f}; targets (regret) {f['targets']}, "
              f"seed noise {f['best_seed_noise']:.4f}; headline target {f['headline_target']}")
        k = f["headline_target"]
        print(f"{'method':22s} {'budget':>6s} {'epochs to reach [95% CI]':>30s} {'reached':>7s} "
              f"{'sim s to reach':>14s} {'regret at 100 epochs':>20s}")
        for method, per in f["methods"].items():
            for b, v in sorted(per.items(), key=lambda kv: int(kv[0])):
                e, g = v[f"reach_epochs_{k}"], v["normalised_regret_at_epochs"]["100"]
                print(f"{method:22s} {b:>6s} {e['median']:>10.0f} [{e['ci95'][0]:.0f}, {e['ci95'][1]:.0f}]"
                      f"{'':>8s} {e['reached']:>7.2f} {v[f'reach_s_{k}']['median']:>14.0f} {g['median']:>20.4f}")
        for method, h in f["epochs_vs_random_asha_at_100"].items():
            print(f"  {method} / random_asha trial-epochs to reach, 100 trials: {h['median_bounds']} {h['ci95']} "
                  f"(censored {h['censored']}; rank {f['ranks_at_100'][method]})")
    if not a.quick:
        ran = [r["replay"] for r in runs]  # --until may stop early
        merge_summary(figures, [min(ran), max(ran)] if ran else [])


GOALS = {"synthetic": (0.4, 0.5), "real": (0.6, 0.75)}  # issue 32: median and the interval's upper end


def goal(figure: dict) -> tuple[float, float]:
    """The table's goal: a synthetic store's (tune_p7.data.synth, as record_grid.py names it) or real data's."""
    return GOALS["synthetic" if str(figure["recording"].get("data", "")).startswith("tune_p7.data.synth") else "real"]


def merge_summary(figures: dict, replays: list[int]) -> None:
    """Fold the figures into summary.json: the default's headline per table (with the replay seeds it ran, first and
    last, and the default's sections), the ranks and the goals, for each table whose replays ran 100 trials; a table
    replayed at other budgets only keeps what summary.json holds for it."""
    path = results_dir(False) / "summary.json"
    summary = json.loads(path.read_text()) if path.exists() else {}
    summary.pop("best_method_epochs_vs_random_asha", None)  # chosen after seeing the results: replaced
    for key in [k for k in summary.get("targets", {}) if k.startswith("best_method_epochs_vs_random_asha/")]:
        del summary["targets"][key]
    figures = {name: f for name, f in figures.items() if f["ranks_at_100"]}
    summary.setdefault("default_method_epochs_vs_random_asha", {}).update(
        {name: f["default_method_epochs_vs_random_asha"] and {**f["default_method_epochs_vs_random_asha"],
                                                             "replays": replays, "default": METHODS[DEFAULT]}
         for name, f in figures.items()})
    summary.setdefault("search_method_ranks_at_100", {}).update(
        {name: f["ranks_at_100"] for name, f in figures.items()})
    for name, f in figures.items():
        h = f["default_method_epochs_vs_random_asha"] or {}
        most, upper = goal(f)
        m, hi = (h.get("median_bounds") or [None, None])[1], (h.get("ci95") or [None, None])[1]
        summary.setdefault("targets", {})[f"default_method_epochs_vs_random_asha/{name}"] = {
            "target": f"<= {most} (upper end <= {upper})", "bench": "search_compare",
            "met": bool(m is not None and m <= most and hi is not None and hi <= upper),
            "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    path.write_text(dump_json(summary))


if __name__ == "__main__":
    main()
