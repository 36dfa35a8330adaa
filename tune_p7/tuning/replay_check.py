"""The replay's check: the same search through the real Tune controller, on trials that report a table's
recorded curves (tune_p7.tuning.replay replays it in simulated time; tests/tuning/test_replay.py compares the two,
trial by trial)."""
from __future__ import annotations

import shutil
from pathlib import Path

from tune_p7.space.file import Space
from tune_p7.tuning.replay import warmup_epochs
from tune_p7.tuning.replay_table import Table

BARRIER_TIMEOUT = 120.0  # s for the first wave of trials to start (actor start-ups on a busy machine)


def table_trainable(config: dict, table: Table, seed: int, space: Space, time_scale: float = 0.0,
                    barrier: tuple[str, int] | None = None) -> None:
    """A Ray Tune trainable that trains nothing: it reports its configuration's recorded curve of ``seed``, one
    epoch a result, as tune_p7.tuning.trainable reports a trained one (``epoch``, the metric, ``gate`` from the
    recorded val metrics and ``space``'s gates: Table.gate). Each epoch first sleeps its recorded seconds x
    ``time_scale``, so that trials on several workers report in the order of the replay's clock. ``barrier``
    (folder, n): the first n trials wait there until n have started, so that the first wave starts together as it
    does on that clock (an actor's start-up is not on the table's)."""
    import time
    import uuid

    from ray import tune

    cfg = tuple(config[k] for k in table.keys)
    values, seconds = table.curves[cfg][seed]
    if barrier:
        folder, deadline = Path(barrier[0]), time.monotonic() + BARRIER_TIMEOUT
        folder.mkdir(parents=True, exist_ok=True)
        (folder / uuid.uuid4().hex).touch()
        while (started := sum(1 for _ in folder.iterdir())) < barrier[1]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {started} of the first {barrier[1]} trials started within "
                                   f"{BARRIER_TIMEOUT:.0f} s: fewer can run at once (CPUs per trial?)")
            time.sleep(0.005)
    for epoch, (value, cost) in enumerate(zip(values, seconds), 1):
        time.sleep(cost * time_scale)
        tune.report({table.metric: float(value), "epoch": epoch,
                     "gate": table.gate(cfg, seed, epoch, space.gates, warmup_epochs(space, config))})


def tune_run(table: Table, space: Space, num_samples: int, storage: str, workers: int = 1,
             time_scale: float = 0.0) -> list[tuple[tuple, int]]:
    """The same search through the real Tune controller on ``workers`` workers (each takes 1/workers of the CPUs of
    the Ray it joins), against a one-seed table; with several workers each epoch sleeps its recorded seconds x
    ``time_scale`` (table_trainable). Returns (configuration, last epoch) of every trial in creation order, as
    Replay.ended lists them. Ray must be running."""
    import ray
    from ray import tune

    from tune_p7.tuning.algorithms import make_scheduler, search_algorithm

    if len(table.seeds) != 1:
        raise ValueError("tune_run replays a one-seed table (a real trial cannot know which seed the replay drew)")
    barrier = (str(Path(storage) / "barrier"), min(workers, num_samples)) if workers > 1 else None
    if barrier:
        shutil.rmtree(barrier[0], ignore_errors=True)  # an earlier call's would let every trial through
    trainable = tune.with_resources(tune.with_parameters(table_trainable, table=table, seed=table.seeds[0],
                                                         space=space, time_scale=time_scale,
                                                         barrier=barrier),
                                    {"cpu": ray.cluster_resources().get("CPU", 1) / workers})
    alg = search_algorithm(space)
    tuner = tune.Tuner(trainable, param_space=space.param_space(),
                       tune_config=tune.TuneConfig(scheduler=make_scheduler(space), search_alg=alg,
                                                   num_samples=num_samples, max_concurrent_trials=workers,
                                                   reuse_actors=True),  # short trials: no actor start each
                       run_config=tune.RunConfig(name="tune_run", storage_path=storage, verbose=0))
    return [(tuple(r.config[k] for k in table.keys), int(r.metrics["epoch"])) for r in tuner.fit()]  # in order
