"""Copies of the data resident while 4 trials run on one node.

    python bench/memory.py [--quick]

Two Tune runs of 4 concurrent trials each (the real tune_p7.tuning.trainable.train_trial, data through
tune.with_parameters -> Ray's object store, a small model so that trials are short), once with seed-scale data
(87k train / 11k val windows at 768-d, float32 like the seed's NPZ) and once with tiny data (400 windows).

Snapshot: every trial pauses at its 3rd training step of epoch 2 (after one full epoch and one evaluation, so
every buffer a trial keeps exists); when all 4 wait there, the PSS (proportional set size: a page shared by n
processes counts 1/n in each) of the driver and of every process of its local Ray (gcs, raylet with the plasma
object store, workers) is summed, then the trials go on. The driver dropped its own copy of the data after handing
it to Tune, so what remains of the data is what Ray and the trials hold.

    data_copies_4_trials = (snapshot total PSS, seed-scale data - the same, tiny data) / data bytes

Also sampled every second during the whole run (any phase, evaluation included): median and peak, for the
working memory of the evaluation (its retrieval matrices grow with the validation split). Each trial also checks,
before training, that it got the data without a copy: the chunk matrix is a read-only numpy view whose memory lies
in the object store's shared mapping, the torch tensor the loop gathers batches from shares that memory, and a
gathered batch is new memory. --quick: 20k train / 3k val windows instead of seed scale.

--trim (a what-if, not the product's code): every trial also calls glibc's malloc_trim(0) after each evaluation,
to show how much of the rest is memory the allocator keeps after the evaluation's temporary matrices are freed.
Written to results/memory_trim.json.
"""
from __future__ import annotations

import gc
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import ray  # noqa: E402,F401  (puts its bundled psutil on the path)
import psutil  # noqa: E402

from common import data_bytes, median, parser, synth_data, table, write_result  # noqa: E402

SMALL_MODEL = {"d_model": 64, "n_layers": 2, "n_heads": 4, "d_ff": 128, "batch_size": 64, "epochs": 2,
               "warmup_epochs": 1, "train_eval_windows": 1024}
PAUSE_AT_STEP = 3  # of epoch 2


def instrument(probe_dir: str, trim: bool) -> None:
    """In a trial worker: pause at the PAUSE_AT_STEP-th training step after the first epoch's evaluation, until
    the driver has taken its snapshot (``ready-<pid>`` / ``go`` files in probe_dir)."""
    from tune_p7.core import loop

    if getattr(loop, "_bench_instrumented", False):
        return
    loop._bench_instrumented = True
    state = {"evals": 0, "steps": 0, "paused": False}
    call, step = loop.Evaluator.__call__, loop.TrainStep.__call__

    def counted_call(self, *a, **kw):
        state["evals"] += 1
        try:
            return call(self, *a, **kw)
        finally:
            if trim:
                import ctypes

                ctypes.CDLL("libc.so.6").malloc_trim(0)

    def paused_step(self, *a, **kw):
        if state["evals"] >= 2 and not state["paused"]:  # epoch 1's val and train-subset passes are done
            state["steps"] += 1
            if state["steps"] == PAUSE_AT_STEP:
                state["paused"] = True
                Path(probe_dir, f"ready-{os.getpid()}").write_text("")
                deadline = time.time() + 600
                while not Path(probe_dir, "go").exists() and time.time() < deadline:
                    time.sleep(0.05)
        return step(self, *a, **kw)

    loop.Evaluator.__call__, loop.TrainStep.__call__ = counted_call, paused_step


def checked_trial(config: dict, data, gates, probe_dir: str, trim: bool = False) -> None:
    """train_trial, after recording how this worker holds the data."""
    import numpy as np
    import torch

    from tune_p7.data.batches import SplitTensors
    from tune_p7.tuning.trainable import train_trial

    chunks = data.train.chunks
    addr = chunks.ctypes.data
    mapping = ""
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if lo <= addr < hi:
                mapping = " ".join(fields[5:]) if len(fields) >= 6 else "(anonymous)"
                break
    st = SplitTensors(data.train, config.get("context_length", 5))
    info = {"pid": os.getpid(), "writeable": bool(chunks.flags.writeable), "owndata": bool(chunks.flags.owndata),
            "mapping": mapping, "torch_shares_numpy": st.chunks.data_ptr() == addr,
            "batch_gather_is_new_memory": not np.shares_memory(chunks, st.batch(torch.arange(4)).next.numpy()),
            "val_chunks_writeable": bool(data.val.chunks.flags.writeable)}
    Path(probe_dir, f"probe-{os.getpid()}-{time.time_ns()}.json").write_text(json.dumps(info))
    del st
    instrument(probe_dir, trim)
    train_trial(config, data, gates)


def kind(p: psutil.Process) -> str:
    try:
        cmd = " ".join(p.cmdline())
    except psutil.Error:
        return "gone"
    if p.pid == os.getpid():
        return "driver"
    if "raylet" in cmd:
        return "raylet+plasma"
    if cmd.startswith("ray::"):
        return "workers"
    return "other ray"


def pss_now() -> dict:
    me = psutil.Process()
    total, by = 0, {}
    for p in [me, *me.children(recursive=True)]:
        try:
            pss = p.memory_full_info().pss
        except psutil.Error:
            continue
        k = kind(p)
        total += pss
        by[k] = by.get(k, 0) + pss
    return {"t": time.time(), "total": total, "by": by}


def background(stop: threading.Event, out: list) -> None:
    while not stop.is_set():
        out.append(pss_now())
        stop.wait(1.0)


def snapshot(stop: threading.Event, probe_dir: str, trials: int, out: dict) -> None:
    """Wait until all trials are paused, take 3 PSS readings, let them go."""
    while not stop.is_set():
        if len(list(Path(probe_dir).glob("ready-*"))) >= trials:
            reads = []
            for _ in range(3):
                reads.append(pss_now())
                time.sleep(0.3)
            out["reads"] = reads
            Path(probe_dir, "go").write_text("")
            return
        time.sleep(0.1)


def run(data, storage: str, name: str, probe_dir: str, trim: bool) -> dict:
    from ray import tune

    from tune_p7.tuning.schedulers import GatedFIFO
    from tune_p7.core.gates import Gates

    for f in Path(probe_dir).glob("*"):
        if not f.name.startswith("probe-"):
            f.unlink()
    trainable = tune.with_resources(
        tune.with_parameters(checked_trial, data=data, gates=Gates(drift=-2.0, margin=-2.0), probe_dir=probe_dir,
                             trim=trim),
        {"cpu": 1})
    del data
    gc.collect()  # the driver's own copy goes; the object store's stays
    tuner = tune.Tuner(trainable, param_space={**SMALL_MODEL, "seed": tune.grid_search([0, 1, 2, 3])},
                       tune_config=tune.TuneConfig(scheduler=GatedFIFO(), max_concurrent_trials=4, reuse_actors=False),
                       run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0))
    samples: list = []
    snap: dict = {}
    stop = threading.Event()
    threads = [threading.Thread(target=background, args=(stop, samples), daemon=True),
               threading.Thread(target=snapshot, args=(stop, probe_dir, 4, snap), daemon=True)]
    for th in threads:
        th.start()
    try:
        tuner.fit()
    finally:
        stop.set()
        Path(probe_dir, "go").write_text("")
        for th in threads:
            th.join()
    if "reads" not in snap:
        raise SystemExit("the 4 trials never paused together: no snapshot")
    reads = snap["reads"]
    return {"snapshot_total": median([r["total"] for r in reads]),
            "snapshot_by_kind": {k: median([r["by"].get(k, 0) for r in reads]) for k in reads[0]["by"]},
            "any_phase_median_total": median([s["total"] for s in samples]),
            "any_phase_max_total": max(s["total"] for s in samples), "samples": len(samples)}


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--trim", action="store_true", help="what-if: malloc_trim(0) after every evaluation")
    a = p.parse_args(argv)
    storage = tempfile.mkdtemp(prefix="tune_p7_bench_mem_")
    probe_dir = tempfile.mkdtemp(prefix="tune_p7_bench_mem_probe_")
    ray.init(address="local", num_cpus=4, include_dashboard=False, object_store_memory=2_000_000_000,
             log_to_driver=False)
    try:
        big = synth_data(train_windows=20_000 if a.quick else 87_000, val_windows=3_000 if a.quick else 11_000)
        nbytes, windows = data_bytes(big), (len(big.train.windows(5)), len(big.val.windows(5)))
        seed = run(big, storage, "seed_scale", probe_dir, a.trim)
        del big
        gc.collect()
        tiny = synth_data(train_windows=400, val_windows=100)
        tiny_bytes = data_bytes(tiny)
        small = run(tiny, storage, "tiny", probe_dir, a.trim)
    finally:
        ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)
    probes = [json.loads(f.read_text()) for f in Path(probe_dir).glob("probe-*.json")]
    shutil.rmtree(probe_dir, ignore_errors=True)
    span = nbytes - tiny_bytes
    copies = (seed["snapshot_total"] - small["snapshot_total"]) / span
    zero_copy = bool(probes) and all(not q["writeable"] and not q["owndata"] and q["torch_shares_numpy"]
                                     and q["batch_gather_is_new_memory"] and not q["val_chunks_writeable"]
                                     for q in probes)
    per_kind = {k: (seed["snapshot_by_kind"].get(k, 0) - small["snapshot_by_kind"].get(k, 0)) / span
                for k in seed["snapshot_by_kind"]}
    ray_only = sum(v for k, v in per_kind.items() if k != "driver")
    out = {"data_bytes": nbytes, "tiny_data_bytes": tiny_bytes, "windows": windows, "seed_scale": seed, "tiny": small,
           "data_copies_4_trials": copies, "copies_by_process_kind": per_kind, "copies_ray_processes_only": ray_only,
           "trim_after_eval": a.trim,
           "data_copies_any_phase_median": (seed["any_phase_median_total"] - small["any_phase_median_total"]) / span,
           "data_copies_any_phase_peak": (seed["any_phase_max_total"] - small["any_phase_max_total"]) / span,
           "zero_copy_verified": zero_copy, "trial_probes": probes}
    rows = [{"run": "seed scale" if n == "seed" else "tiny", "data MB": b / 1e6,
             "snapshot PSS MB": r["snapshot_total"] / 1e6,
             **{f"{k} MB": v / 1e6 for k, v in sorted(r["snapshot_by_kind"].items())},
             "any-phase median MB": r["any_phase_median_total"] / 1e6, "peak MB": r["any_phase_max_total"] / 1e6}
            for n, r, b in (("seed", seed, nbytes), ("tiny", small, tiny_bytes))]
    print(table(rows))
    maps = sorted({q["mapping"] for q in probes})
    print(f"\ndata_copies_4_trials = {copies:.2f} (target <= 1.2){' WITH malloc_trim (what-if)' if a.trim else ''}: "
          + ", ".join(f"{k} {v:.2f}" for k, v in sorted(per_kind.items()))
          + f"; Ray processes only (the driver's share of the object store left out): {ray_only:.2f}"
          + f"\nany phase, evaluation included: median {out['data_copies_any_phase_median']:.2f}, "
            f"peak {out['data_copies_any_phase_peak']:.2f}"
          f"\nzero-copy in every trial: {zero_copy} (chunk matrix mapped from: {', '.join(maps)})")
    write_result("memory_trim" if a.trim else "memory", out, quick=a.quick)


if __name__ == "__main__":
    main()
