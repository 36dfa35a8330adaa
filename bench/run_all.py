"""Run every benchmark (one process each, one after another) and gather the headline figures.

    python bench/run_all.py [--quick] [--only step eval ...] [--skip asha ...]

Writes <name>.json per benchmark (each script does) and summary.json with the headline figures, their targets
and whether each is met, in bench/results/ (the committed full-run results) or, with --quick, in the untracked
bench/results/quick/ (common.results_dir). A benchmark that fails leaves its figures out of the
summary (with its error) and the others still run. --only / --skip: re-run some and keep the others' last
results in the summary.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import dump_json, results_dir

HERE = Path(__file__).resolve().parent
BENCHES = ["store_size", "precision", "step", "throughput", "eval", "seed_grid", "ray_overhead", "start_cost", "memory",
           "asha", "search_efficiency", "side_by_side"]
# search_efficiency (12 searches) and side_by_side (15 searches, 17 minutes) are long: --skip them

# key: (bench, how to read it from that bench's JSON, target text, check)
HEADLINES = {
    "step_vs_matmul": ("step", lambda r: r["headline"]["step_vs_matmul"], ">= 0.35", lambda v: v >= 0.35),
    "speedup_vs_naive_fp32": ("step", lambda r: r["headline"]["speedup_vs_naive_fp32"], ">= 4", lambda v: v >= 4),
    "ray_vs_bare": ("ray_overhead", lambda r: r["ray_vs_bare"], ">= 0.95", lambda v: v >= 0.95),
    "seed_grid_hours": ("seed_grid", lambda r: r["seed_grid_hours"], "<= 0.75", lambda v: v <= 0.75),
    "asha_epochs_saved": ("asha", lambda r: r["asha_epochs_saved"], ">= 0.60", lambda v: v >= 0.60),
    "asha_same_best": ("asha", lambda r: r["asha_same_best"], "true", lambda v: v is True),
    "store_vs_npz_bytes": ("store_size", lambda r: r["store_vs_npz_bytes"], "<= 0.2", lambda v: v <= 0.2),
    "data_copies_4_trials": ("memory", lambda r: r["data_copies_4_trials"], "<= 1.2", lambda v: v <= 1.2),
    "tpe_epochs_to_random_best": ("search_efficiency", lambda r: r["tpe_epochs_to_random_best"]["median"], "<= 0.5",
                                  lambda v: v is not None and v <= 0.5),
    "bohb_epochs_to_random_best": ("search_efficiency", lambda r: r["bohb_epochs_to_random_best"]["median"],
                                   "<= 0.5", lambda v: v is not None and v <= 0.5),
    "pbt_best_minus_random_best": ("search_efficiency", lambda r: r["pbt_best_minus_random_best"]["median"],
                                   "reported", lambda v: None),
    "eval_seconds_11k": ("eval", lambda r: r["eval_seconds_11k"], "reported", lambda v: None),
    "trial_start_cpu_s": ("start_cost", lambda r: r["trial_start_cpu_s"], "reported", lambda v: None),
    "first_command_s": ("side_by_side", lambda r: r["first_command_s"], "<= 30", lambda v: v <= 30),
    "first_command_vs_fastest": ("side_by_side", lambda r: r["first_command_vs_fastest"], "<= 1.2",
                                 lambda v: v <= 1.2),
    "first_command_cold_vs_fastest": ("side_by_side", lambda r: r["first_command_cold_vs_fastest"], "<= 1.2",
                                      lambda v: v <= 1.2),
    "wide_vs_fastest": ("side_by_side", lambda r: r["wide_vs_fastest"], "<= 1.2", lambda v: v <= 1.2),
}


def summarize(quick: bool, ran: dict[str, dict]) -> dict:
    res = {}
    for name in BENCHES:
        f = results_dir(quick) / f"{name}.json"
        if f.exists():
            res[name] = json.loads(f.read_text())
    summary = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": quick, "runs": ran}
    checks = {}
    for key, (bench, get, target, ok) in HEADLINES.items():
        try:
            v = get(res[bench])
        except (KeyError, TypeError):
            summary[key] = None
            checks[key] = {"target": target, "met": None, "bench": bench}
            continue
        summary[key] = v
        checks[key] = {"target": target, "met": ok(v), "bench": bench, "measured_at": res[bench].get("time")}
    if "throughput" in res:
        summary["sequences_per_second"] = {
            f"{name} ({t} thread{'s' if str(t) != '1' else ''})": round(v["seq_s"], 1)
            for t, per in res["throughput"]["threads"].items() for name, v in per.items()}
    if "search_efficiency" in res:  # the spread over search seeds behind the three medians above
        summary["search_efficiency"] = {k: {kk: res["search_efficiency"][k][kk] for kk in ("median", "min", "max",
                                                                                          "per_seed")}
                                        for k in ("tpe_epochs_to_random_best", "bohb_epochs_to_random_best",
                                                  "pbt_best_minus_random_best")}
    if "start_cost" in res:  # the default's figure is the headline; a new worker per trial beside it
        summary["trial_start_cpu_s_by_mode"] = res["start_cost"]["trial_start_cpu_s_by_mode"]
    if "precision" in res:
        summary["bf16_vs_fp32_train_step"] = res["precision"]["train"].get("64", {}).get("bf16_vs_fp32")
    summary["targets"] = checks
    return summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", nargs="+", choices=BENCHES)
    p.add_argument("--skip", nargs="+", choices=BENCHES, default=[])
    a = p.parse_args(argv)
    ran = {}
    for name in a.only or BENCHES:
        if name in a.skip:
            continue
        cmd = [sys.executable, str(HERE / f"{name}.py")] + (["--quick"] if a.quick else [])
        print(f"\n=== {name} {'(quick)' if a.quick else ''}", flush=True)
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=str(HERE))
        ran[name] = {"seconds": round(time.perf_counter() - t, 1), "returncode": proc.returncode}
    summary = summarize(a.quick, ran)
    out = results_dir(a.quick) / "summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dump_json(summary))
    print(f"\n=== summary ({out.relative_to(HERE.parent)})")
    for key, c in summary["targets"].items():
        v = summary[key]
        shown = f"{v:.3f}" if isinstance(v, float) else str(v)
        mark = {True: "met", False: "MISSED", None: "-"}[c["met"]]
        print(f"{key:24s} {shown:>10s}   target {c['target']:9s} {mark}")
    return 0 if all(r["returncode"] == 0 for r in ran.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
