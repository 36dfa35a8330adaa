"""Hours for the seed's four runs at seed scale on this machine, projected from measured steps and evaluations.

    python bench/seed_grid.py [--quick]

Seed scale: 87k train / 11k val sequences, 768-d, 10 epochs, batch 64, default model; runs (ctx 5, margin .07,
lam .8), (5, .07, .6), (5, .10, .8), (7, .07, .8) = search_spaces/seed_grid.yaml (ASHA and the gates could stop
runs early; the projection assumes all four run their 10 epochs).

Measured (alternated rounds, seed-scale synthetic data built in memory):
- schedule "2 trials x 1 CPU" (what seed_grid.yaml does on 2 cores: two trials at a time, one thread each): steps/s
  at ctx 5 and ctx 7 with one thread while a partner process trains on the other core (the second trial), and the
  per-epoch evaluation (validation pass against the 11k+ bank + the 4096-window train pass) likewise;
- schedule "1 trial x 2 CPUs" (runs one after another with two threads each): the same without a partner.
Projection: epoch = steps / (steps/s) + evaluation; run = 10 epochs + the Evaluator set-up; 2x1: wave 1 = two
ctx-5 runs side by side, wave 2 = ctx 5 beside ctx 7; 1x2: 3 ctx-5 runs + 1 ctx-7 run in turn. Plus 10 s for
Ray start-up. Not included: reading the 1.4 GB NPZ (done once by the driver).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import (alternate, step_loop, forward_macs, matmul_gflops, median, parser, synth_data, synth_split, table,
                    train_flops_per_seq, write_result)
from tune_p7.data.batches import SplitTensors
from tune_p7.core.config import P7Config
from tune_p7.core.loop import Evaluator, TrainStep, make_optimizer, use_bf16
from tune_p7.core.model import build_model

SEED_TRAIN, SEED_VAL, EPOCHS = 87_000, 11_000, 10
RUNS = [(5, 0.07, 0.8), (5, 0.07, 0.6), (5, 0.10, 0.8), (7, 0.07, 0.8)]
RAY_STARTUP_S = 10.0


def step_runner(cfg: P7Config, st: SplitTensors, steps: int):
    torch.manual_seed(0)
    model = build_model(cfg, st.chunks.shape[1])
    step = TrainStep(cfg, model, make_optimizer(cfg, model), st, use_bf16(cfg))
    loop = step_loop(step, st, cfg.batch_size)
    return lambda n=steps: n / loop(n)  # steps per second


def partner() -> None:
    """The second trial: trains ctx-5 steps on one thread until killed."""
    torch.set_num_threads(1)
    run = step_runner(P7Config(), SplitTensors(synth_split("partner", 300, 40, seed=7), 5), 10)
    Path(sys.argv[2]).write_text("ready")
    while True:
        run()


def start_partner(tmp: Path) -> subprocess.Popen:
    flag = tmp / f"partner-{os.getpid()}.ready"
    flag.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, __file__, "--partner", str(flag)], cwd=str(Path(__file__).parent))
    for _ in range(600):
        if flag.exists() or proc.poll() is not None:
            break
        time.sleep(0.1)
    flag.unlink(missing_ok=True)
    return proc


def measure(threads: int, data, quick: bool) -> dict:
    torch.set_num_threads(threads)
    rounds = 2 if quick else 7
    n = 4 if quick else 12
    st = {k: SplitTensors(data.train, k) for k in (5, 7)}
    runs = alternate({f"ctx{k}": step_runner(P7Config(context_length=k), st[k], n) for k in (5, 7)}, rounds)
    ev = {}
    for k in (5, 7):
        cfg = P7Config(context_length=k)
        t = time.perf_counter()
        val = Evaluator(data.val, cfg)
        tr = Evaluator(data.train, cfg, max_windows=cfg.train_eval_windows, retrieval=False)
        build = time.perf_counter() - t
        torch.manual_seed(0)
        model = build_model(cfg, 768)
        passes = []
        for _ in range(1 if quick else 2):
            t = time.perf_counter()
            val(model, use_bf16(cfg))
            tr(model, use_bf16(cfg))
            passes.append(time.perf_counter() - t)
        ev[k] = {"measured_s": median(passes), "val_windows": len(val.index), "bank": len(val.bank),
                 "build_s": build}
    return {"steps_per_s": {k: median(runs[f"ctx{k}"]) for k in (5, 7)},
            "steps_per_s_best": {k: max(runs[f"ctx{k}"]) for k in (5, 7)}, "runs": runs, "eval": ev}


def project(m: dict, rates: str = "steps_per_s") -> dict:
    """Seconds per epoch and per run at seed scale. The evaluation was measured on the synthetic val split; its
    validation share is scaled linearly to 11k queries (the 4096-window train pass is the same at any scale)."""
    per_run = {}
    for k in (5, 7):
        e = m["eval"][k]
        share = 4096 / (4096 + e["val_windows"])  # the train pass's share of the measured time (same work per window)
        scale = share + (1 - share) * SEED_VAL / e["val_windows"]
        train = (SEED_TRAIN // 64) / m[rates][k]
        ev = e["measured_s"] * scale
        per_run[k] = {"train_epoch_s": train, "eval_epoch_s": ev, "eval_scale": scale,
                      "run_s": EPOCHS * (train + ev) + e["build_s"] * SEED_VAL / e["val_windows"]}
    return per_run


def main(argv=None):
    if len(sys.argv) > 1 and sys.argv[1] == "--partner":
        partner()
        return
    p = parser(__doc__.splitlines()[0])
    a = p.parse_args(argv)
    val_n = 3000 if a.quick else SEED_VAL
    train_n = 20000 if a.quick else SEED_TRAIN
    data = synth_data(train_windows=train_n, val_windows=val_n, chunks_per_article=24)
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    part = start_partner(tmp)
    try:
        two_by_one = measure(1, data, a.quick)
    finally:
        part.send_signal(signal.SIGTERM)
        part.wait(timeout=30)
    one_by_two = measure(2, data, a.quick)
    out = {"quick": a.quick, "train_windows_measured": len(SplitTensors(data.train, 5)), "val_windows_measured": val_n}
    def grid_seconds(name, per):
        if name == "2x1":
            return per[5]["run_s"] + max(per[5]["run_s"], per[7]["run_s"]) + RAY_STARTUP_S
        return 3 * per[5]["run_s"] + per[7]["run_s"] + RAY_STARTUP_S

    for name, m in (("2x1", two_by_one), ("1x2", one_by_two)):
        per = project(m)
        out[name] = {"steps_per_s": m["steps_per_s"], "seq_per_s": {k: 64 * v for k, v in m["steps_per_s"].items()},
                     "eval": m["eval"], "per_run": per, "hours": grid_seconds(name, per) / 3600,
                     "hours_from_fastest_round": grid_seconds(name, project(m, "steps_per_s_best")) / 3600,
                     "step_runs": m["runs"]}
    # the floor: every matmul FLOP of the four runs (training + per-epoch evaluation forwards) at the matmul peak
    torch.set_num_threads(2)
    # at the peak of the precision the step runs in (precision auto: bf16 where it is faster, else fp32)
    dtype = torch.bfloat16 if use_bf16(P7Config()) else torch.float32
    peak = max(matmul_gflops(2048, dtype) for _ in range(3)) * 1e9
    out["matmul_peak_dtype"] = str(dtype).replace("torch.", "")
    flops = 0.0
    for k, *_ in RUNS:
        cfg = P7Config(context_length=k)
        fwd = 2 * sum(forward_macs(cfg, 768).values())
        flops += EPOCHS * (SEED_TRAIN * train_flops_per_seq(cfg, 768, 64) + (SEED_VAL + cfg.train_eval_windows) * fwd)
    out["floor_hours_at_matmul_peak"] = flops / peak / 3600
    out["matmul_peak_gflops"] = peak / 1e9
    out["seed_grid_hours"] = out["2x1"]["hours"]
    out["best_schedule"] = min(("2x1", "1x2"), key=lambda k: out[k]["hours"])
    rows = []
    for name, label in (("2x1", "2 trials x 1 CPU"), ("1x2", "1 trial x 2 CPUs")):
        o = out[name]
        for k in (5, 7):
            rows.append({"schedule": label, "ctx": k, "seq/s per trial": o["seq_per_s"][k],
                         "train s/epoch": o["per_run"][k]["train_epoch_s"], "eval s/epoch": o["per_run"][k]["eval_epoch_s"],
                         "run h": o["per_run"][k]["run_s"] / 3600})
        rows.append({"schedule": label, "ctx": "grid", "run h": o["hours"]})
    print(table(rows, ["schedule", "ctx", "seq/s per trial", "train s/epoch", "eval s/epoch", "run h"]))
    print(f"\nseed_grid_hours = {out['seed_grid_hours']:.2f} h (2 trials x 1 CPU, as seed_grid.yaml runs; target <= 0.75)"
          f"; 1 trial x 2 CPUs: {out['1x2']['hours']:.2f} h; from the fastest rounds (least background load): "
          f"{out['2x1']['hours_from_fastest_round']:.2f} h / {out['1x2']['hours_from_fastest_round']:.2f} h"
          f"\nfloor: all matmul FLOPs of the grid at the {peak / 1e9:.0f} GFLOP/s matmul peak = "
          f"{out['floor_hours_at_matmul_peak']:.2f} h")
    write_result("seed_grid", out, quick=a.quick)


if __name__ == "__main__":
    main()
