"""Epoch speed of a Ray Tune trial / the same loop run bare, after the first epoch.

    python bench/ray_overhead.py [--quick]

The default model (768-d, ctx 5, batch 64) on synthetic data, one CPU: ``fit`` called bare (threads 1, a report
callback that only takes the time) and the real trainable (tune_p7.tuning.trainable.train_trial: data through
tune.with_parameters / the object store, metrics, gate, a checkpoint every epoch) in a one-trial Tuner with 1 CPU.
Runs alternate (bare, Ray, bare, Ray, ...) on one local Ray started once. An epoch's time is the time between two
reports (training, evaluation and, under Ray, the checkpoint and the report); epochs after the first are compared
run against run of the same round. The per-epoch overhead in seconds is also reported and projected onto a
seed-scale epoch (87k sequences).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

from common import median, parser, synth_data, table, write_result  # noqa: E402
from tune_p7.core.config import P7Config  # noqa: E402
from tune_p7.core.loop import fit  # noqa: E402
from tune_p7.core.gates import Gates  # noqa: E402

NO_GATES = Gates(drift=-2.0, margin=-2.0, grace_epochs=0)  # never stop: every run trains all its epochs


def bare(cfg: P7Config, data) -> tuple[list[float], list[float], list[float]]:
    """(seconds per epoch, training seconds per epoch, evaluation seconds per epoch) of fit run bare."""
    stamps = [time.perf_counter()]
    hist = fit(cfg, data, report=lambda m, s: stamps.append(time.perf_counter()))
    return ([b - a for a, b in zip(stamps, stamps[1:])], [m["train_seconds"] for m in hist],
            [m["eval_seconds"] for m in hist])


def with_ray(cfg: P7Config, data, storage: str, name: str) -> tuple[list[float], list[float], list[float]]:
    from ray import tune

    from tune_p7.tuning.schedulers import GatedFIFO
    from tune_p7.tuning.trainable import train_trial

    trainable = tune.with_resources(tune.with_parameters(train_trial, data=data, gates=NO_GATES), {"cpu": 1})
    params = {k: v for k, v in cfg.to_dict().items() if k != "threads"}
    tuner = tune.Tuner(trainable, param_space=params,
                       tune_config=tune.TuneConfig(scheduler=GatedFIFO(), num_samples=1, reuse_actors=True),
                       run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0))
    grid = tuner.fit()
    df = grid[0].metrics_dataframe
    return ([float(x) for x in df["time_this_iter_s"]], [float(x) for x in df["train_seconds"]],
            [float(x) for x in df["eval_seconds"]])


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=None)
    a = p.parse_args(argv)
    import ray

    rounds = a.rounds or (1 if a.quick else 4)
    epochs = 3
    data = synth_data(train_windows=900 if a.quick else 6000, val_windows=300 if a.quick else 1000)
    cfg = P7Config(epochs=epochs, threads=1, train_eval_windows=1024 if a.quick else 4096)
    storage = tempfile.mkdtemp(prefix="tune_p7_bench_ray_")
    t = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=1_000_000_000,
             log_to_driver=False)
    ray_start = time.perf_counter() - t
    rows, per_round = [], []
    try:
        for r in range(rounds):
            b, bt, be = bare(cfg, data)
            t = time.perf_counter()
            y, yt, ye = with_ray(cfg, data, storage, f"round{r}")
            ray_wall = time.perf_counter() - t
            bm, ym = median(b[1:]), median(y[1:])
            tr = median(bt[1:]) / median(yt[1:])
            # where an epoch's extra time under Ray goes: training, evaluation, the rest (checkpoint + report)
            rest = lambda e, t_, v: median([a - b - c for a, b, c in zip(e[1:], t_[1:], v[1:])])  # noqa: E731
            parts = {"train_s": median(yt[1:]) - median(bt[1:]), "eval_s": median(ye[1:]) - median(be[1:]),
                     "report_checkpoint_s": rest(y, yt, ye) - rest(b, bt, be)}
            per_round.append({"bare_epoch_s": b, "ray_epoch_s": y, "bare_train_s": bt, "ray_train_s": yt,
                              "bare_eval_s": be, "ray_eval_s": ye, "ratio": bm / ym, "train_only_ratio": tr,
                              "overhead_s": ym - bm, "overhead_parts_s": parts, "ray_fit_wall_s": ray_wall})
            rows.append({"round": r, "bare s/epoch": bm, "ray s/epoch": ym, "overhead s": ym - bm, "ratio": bm / ym,
                         "training-only ratio": tr, "+train s": parts["train_s"], "+eval s": parts["eval_s"],
                         "+report/ckpt s": parts["report_checkpoint_s"]})
    finally:
        ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)
    ratio = median([r["ratio"] for r in per_round])
    overhead = median([r["overhead_s"] for r in per_round])
    bare_epoch = median([median(r["bare_epoch_s"][1:]) for r in per_round])
    seqs = len(data.train.windows(5))
    seed_epoch = bare_epoch * 87_000 / seqs  # an epoch scales with its sequences (evaluation aside: conservative)
    out = {"rounds": per_round, "ray_vs_bare": ratio,
           "train_only_ratio": median([r["train_only_ratio"] for r in per_round]), "overhead_s_per_epoch": overhead,
           "overhead_parts_s": {k: median([r["overhead_parts_s"][k] for r in per_round])
                                for k in per_round[0]["overhead_parts_s"]}, "train_windows": seqs,
           "epochs": epochs, "ray_init_s": ray_start, "ray_vs_bare_seed_scale_projection": seed_epoch / (seed_epoch + overhead)}
    print(table(rows))
    print(f"\nray_vs_bare = {ratio:.3f} at {bare_epoch:.1f} s epochs ({seqs} sequences; target >= 0.95); overhead "
          f"{overhead:.2f} s/epoch -> {out['ray_vs_bare_seed_scale_projection']:.3f} at a seed-scale epoch")
    write_result("ray_overhead", out, quick=a.quick)


if __name__ == "__main__":
    main()
