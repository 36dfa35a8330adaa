"""Trial-epochs each search method spends to find a good configuration: random + ASHA, TPE + ASHA, BOHB, PBT.

    python bench/search_efficiency.py [--quick]

One synthetic article store (tune_p7.data.synth: 300 articles of 24 chunks, 64-d, planted forward signal 2.0) and one
space on a tiny model (d_model 32, 1 layer) in which every searched key matters within the epochs, as measured with
single fits of 6 epochs before the bench was written (val margins; base lr 3e-3, temperature 0.1, λ start 0.8,
ctx 5, transformer: +0.22): the learning rate (loguniform 1e-5..3e-2: 1e-4 and below do not learn, -0.08; 1e-2
+0.21; 3e-2 +0.10), the InfoNCE temperature (loguniform 0.01..10: 0.01 +0.14, 3 +0.24), the anchor λ's start
(uniform 0.1..0.88 in the range 0..0.95: 0.2 -0.07, 0.5 +0.10, 0.9 +0.29), the context length (3 +0.29, 5) and
the architecture (the LSTM at lr 1e-3 and 3e-3: -0.17, -0.14). Each method runs ``python tune_p7/search.py``
(``--no-probe --confirm-top 0``, a private storage folder under /tmp) over the same seeds, with the same
trial-epoch budget:

- random + ASHA and TPE + ASHA: ``num_samples`` trials of ``epochs`` epochs (at most num_samples x epochs);
- BOHB (TuneBOHB + HyperBandForBOHB): the same num_samples (HyperBand stops about as many epochs as ASHA);
- PBT: a population of ``population`` trials x epochs, population chosen so that it about matches what random
  + ASHA spends.

Trial-epochs are counted from each trial's result.json: one per distinct (lineage, epoch) of the rows not marked
``resumed`` (a re-reported line after a restore or a pause is not an epoch trained). The anytime curve of a run is
the best val margin of any epoch reported so far against trial-epochs spent, rows in the order they were reported
(their timestamp). Headline figures (per seed, then median / min / max over seeds):

- ``tpe_epochs_to_random_best``: trial-epochs TPE + ASHA spent until its best reached random + ASHA's final best
  (same seed), divided by the trial-epochs random needed to first reach that best; inf (null in the JSON) when
  it never does;
- ``bohb_epochs_to_random_best``: the same for BOHB;
- ``pbt_best_minus_random_best``: PBT's best at random's total budget (or its own, if smaller) minus random's
  final best.
One Ray start per run (a subprocess each, ~5 s fixed cost): search.py's main() starts its own local Ray.
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from common import ROOT, dump_json, parser, results_dir, table, write_result

from tune_p7.data.store import write_store
from tune_p7.data.synth import generate

METHODS = ("random", "tpe", "bohb", "pbt")


def sizes(quick: bool) -> dict:
    if quick:
        return {"articles": 150, "num_samples": 6, "epochs": 3, "population": 4, "seeds": [0, 1, 2]}
    return {"articles": 300, "num_samples": 20, "epochs": 6, "population": 8, "seeds": [0, 1, 2, 3, 4]}


def space(method: str, seed: int, sz: dict) -> dict:
    """The bench's space for one method and search seed."""
    params = {"epochs": sz["epochs"], "d_model": 32, "n_layers": 1, "n_heads": 4, "d_ff": 64, "lstm_layers": 1,
              "batch_size": 128, "warmup_epochs": 1, "train_eval_windows": 256, "lambda_min": 0.0,
              "lambda_max": 0.95, "seed": seed, "lambda_init": {"uniform": [0.1, 0.88]},
              "context_length": {"choice": [3, 5]}, "arch": {"choice": ["transformer", "lstm"]}}
    tuned = {"lr": {"loguniform": [1.0e-5, 3.0e-2]}, "temperature": {"loguniform": [0.01, 10.0]}}
    sp = {"description": f"bench/search_efficiency.py: {method}", "num_samples": sz["num_samples"],
          "metric": "margin", "mode": "max", "gates": {"drift": 0.05, "margin": -2.0, "grace_epochs": 1},
          "checkpoints": {"num_to_keep": 3 if method == "pbt" else 1}, "resources": {"cpus_per_trial": 1},
          "confirm": {"top": 0}}
    asha = {"name": "asha", "grace_period": 1, "reduction_factor": 2, "brackets": 1}
    if method == "random":
        sp.update(params={**params, **tuned}, scheduler=asha, search={"algorithm": "random", "seed": seed})
    elif method == "tpe":
        sp.update(params={**params, **tuned}, scheduler=asha,
                  search={"algorithm": "optuna", "seed": seed, "n_startup_trials": max(2, sz["num_samples"] // 4)})
    elif method == "bohb":
        sp.update(params={**params, **tuned}, search={"algorithm": "bohb", "seed": seed, "reduction_factor": 2})
    else:  # PBT mutates lr and temperature; the rest is drawn once per trial
        sp.update(params=params, num_samples=sz["population"],
                  scheduler={"name": "pbt", "perturbation_interval": 1, "quantile_fraction": 0.34,
                             "resample_probability": 0.25, "mutations": tuned},
                  search={"algorithm": "random", "seed": seed})
    return sp


def run_search(space_file: Path, data: Path, storage: Path, name: str) -> tuple[Path, float]:
    cmd = [sys.executable, str(ROOT / "tune_p7" / "search.py"), "--space", str(space_file), "--data", str(data),
           "--storage", str(storage), "--name", name, "--num-cpus", "2", "--no-probe", "--confirm-top", "0"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"search.py ({name}) failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return storage / name, wall


def trained_rows(exp: Path) -> list[dict]:
    """Every epoch trained in the experiment, in report order: rows of the trials' result.json not marked
    ``resumed``, one per (trial, lineage, epoch)."""
    rows, seen = [], set()
    for f in sorted(exp.glob("*/result.json")):
        for line in f.read_text().splitlines():
            r = json.loads(line) if line.strip() else None
            if not r or r.get("resumed") or "margin" not in r:
                continue
            key = (r.get("trial_id"), r.get("lineage"), r.get("epoch"))
            if key in seen:
                continue
            seen.add(key)
            rows.append(r)
    rows.sort(key=lambda r: (r.get("timestamp", 0), r.get("time_total_s", 0)))
    return rows


def anytime(rows: list[dict]) -> list[float]:
    """Best val margin after 1, 2, ... trial-epochs (NaN margins count as epochs, not as values)."""
    best, out = -math.inf, []
    for r in rows:
        m = r["margin"]
        if isinstance(m, (int, float)) and math.isfinite(m):
            best = max(best, m)
        out.append(best)
    return out


def epochs_to_reach(curve: list[float], target: float) -> float:
    """Trial-epochs until the curve first reaches target (inf if never)."""
    return next((i + 1 for i, v in enumerate(curve) if v >= target - 1e-12), math.inf)


def spread(values: list[float]) -> dict:
    finite = [v for v in values if math.isfinite(v)]
    return {"per_seed": values, "median": float(np.median(values)) if values else math.nan,
            "min": min(values) if values else math.nan, "max": max(values) if values else math.nan,
            "seeds_reached": len(finite)}


def headline(curves: dict[str, dict[int, list[float]]]) -> dict:
    out = {}
    rnd = curves["random"]
    for method in ("tpe", "bohb"):
        vals = []
        for seed, rc in rnd.items():
            target = rc[-1]
            vals.append(epochs_to_reach(curves[method][seed], target) / epochs_to_reach(rc, target))
        out[f"{method}_epochs_to_random_best"] = spread(vals)
    diffs = []
    for seed, rc in rnd.items():
        pc = curves["pbt"][seed]
        diffs.append(pc[min(len(rc), len(pc)) - 1] - rc[-1])
    out["pbt_best_minus_random_best"] = spread(diffs)
    return out


def plot(curves: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=150)  # 1200 x 750 px
    for method, per_seed in curves.items():
        n = max(len(c) for c in per_seed.values())
        # a seed's search that ended keeps its best: held at its final value, so the median never falls
        grid = np.array([c + [c[-1]] * (n - len(c)) for c in per_seed.values()], dtype=float)
        grid[~np.isfinite(grid)] = np.nan
        x = np.arange(1, n + 1)
        line, = ax.plot(x, np.nanmedian(grid, axis=0), label=f"{method} (median of {len(per_seed)} seeds)")
        ax.fill_between(x, np.nanmin(grid, axis=0), np.nanmax(grid, axis=0), color=line.get_color(), alpha=0.2)
        ends = [len(c) for c in per_seed.values()]
        ax.plot(ends, [grid[i, e - 1] for i, e in enumerate(ends)], "|", color=line.get_color(), markersize=10)
    ax.set_xlabel("trial-epochs spent")
    ax.set_ylabel("best val margin found")
    ax.set_title("Anytime search efficiency (band: min..max over seeds; |: where a seed's search ended)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


GOALS = {"tpe_epochs_to_random_best": 0.5, "bohb_epochs_to_random_best": 0.5, "pbt_best_minus_random_best": None}


def merge_summary(quick: bool, figures: dict) -> None:
    """Put the headline keys and their goals into summary.json without dropping what other benches wrote."""
    path = results_dir(quick) / "summary.json"
    summary = json.loads(path.read_text()) if path.exists() else {}
    summary.update({k: v["median"] for k, v in figures.items()})
    summary["search_efficiency"] = {k: {kk: v[kk] for kk in ("median", "min", "max", "per_seed")}
                                    for k, v in figures.items()}
    for k, goal in GOALS.items():
        m = figures[k]["median"]
        summary.setdefault("targets", {})[k] = {
            "target": "reported" if goal is None else f"<= {goal}", "bench": "search_efficiency",
            "met": None if goal is None else bool(math.isfinite(m) and m <= goal),
            "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    path.write_text(dump_json(summary))


def main(argv=None):
    a = parser(__doc__.splitlines()[0]).parse_args(argv)
    sz = sizes(a.quick)
    work = Path(tempfile.mkdtemp(prefix="tune_p7_bench_eff_"))
    curves = {m: {} for m in METHODS}
    runs = []
    t0 = time.perf_counter()
    try:
        art, idx, vec = generate(sz["articles"], 24, 64, forward_signal=2.0, seed=0)
        data = work / "store.parquet"
        write_store(data, art, idx, vec)
        for seed in sz["seeds"]:  # methods alternate within a seed: the machine's load hits them alike
            for method in METHODS:
                sp_file = work / f"{method}_{seed}.yaml"
                sp_file.write_text(yaml.safe_dump(space(method, seed, sz)))
                exp, wall = run_search(sp_file, data, work / "results", f"{method}_{seed}")
                rows = trained_rows(exp)
                curves[method][seed] = anytime(rows)
                best = max(rows, key=lambda r: r["margin"] if math.isfinite(r["margin"]) else -math.inf)
                runs.append({"method": method, "seed": seed, "trials": len(list(exp.glob("*/result.json"))),
                             "trial_epochs": len(rows), "best_margin": curves[method][seed][-1], "wall_s": wall,
                             "best_config": {k.removeprefix("config/"): v for k, v in best.get("config", {}).items()
                                             if k in ("lr", "temperature", "lambda_init", "arch", "context_length")}})
                print(f"{method:6s} seed {seed}: {runs[-1]['trial_epochs']} trial-epochs, best margin "
                      f"{runs[-1]['best_margin']:.4f}, {wall:.0f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures = headline(curves)
    budget = {"num_samples": sz["num_samples"], "epochs": sz["epochs"], "pbt_population": sz["population"],
              "max_trial_epochs_random_tpe": sz["num_samples"] * sz["epochs"],
              "pbt_trial_epochs": sz["population"] * sz["epochs"],
              "trial_epochs_spent": {m: [r["trial_epochs"] for r in runs if r["method"] == m] for m in METHODS}}
    notes = ("null (inf in the printed table): the method never reached random + ASHA's final best of the same seed "
             "within its budget; a median of null means most seeds never reached it")
    out = {**figures, "budget": budget, "seeds": sz["seeds"], "store": {"articles": sz["articles"], "chunks": 24,
           "dim": 64, "forward_signal": 2.0}, "runs": runs, "curves": curves, "note": notes,
           "wall_s": time.perf_counter() - t0}
    print()
    print(table([{k: r[k] for k in ("method", "seed", "trials", "trial_epochs", "best_margin", "wall_s")} for r in runs]))
    for k, v in figures.items():
        print(f"{k}: median {v['median']:.3g} (min {v['min']:.3g}, max {v['max']:.3g}; per seed "
              f"{', '.join(f'{x:.3g}' for x in v['per_seed'])})")
    write_result("search_efficiency", out, quick=a.quick)
    plot(curves, results_dir(a.quick) / "search_efficiency.png")
    merge_summary(a.quick, figures)


if __name__ == "__main__":
    main()
