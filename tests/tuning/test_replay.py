"""The replay backend (tune_p7/tuning/replay.py): tune_p7's own schedulers and searchers against a recorded table in
simulated time, checked against a hand-written table and against the real Tune controller."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from tune_p7.core.gates import Gates
from tune_p7.tuning.replay import incumbent_regret, one_epoch_top_k, reach, regret_at, replay, search_space
from tune_p7.tuning.replay_table import Table
from tune_p7.tuning.replay_check import tune_run  # noqa: F401  (real_runs' script imports it from here)

LRS, TEMPS, KS = [1e-4, 1e-3, 1e-2], [0.05, 0.1], [3, 5]
SPACE = """
num_samples: 1
metric: margin
mode: max
params:
  epochs: 4
  lr: {grid: [1.0e-4, 1.0e-3, 1.0e-2]}
  temperature: {grid: [0.05, 0.1]}
  context_length: {grid: [3, 5]}
scheduler: {name: fifo}
gates: {drift: -2.0, margin: -2.0, grace_epochs: 1}
confirm: {top: 0}
"""
ASHA = {"name": "asha", "grace_period": 1, "reduction_factor": 2}
BEST = (1e-3, 0.1, 5)


def table(seeds=(0, 1), random_curves=False) -> Table:
    """12 configurations x 4 epochs. Hand-written: BEST rises to 0.5, every other one stays below 0.3; seed 1 is
    0.01 higher; an epoch e costs 1.1 + 0.1 e (+ 0.5 for seed 1) seconds. ``random_curves``: seeded random walks
    instead (their order changes between epochs, so ASHA's decisions depend on which trial reached a rung first)
    and seconds drawn from 0.4-1.4 per configuration and epoch (trials on several workers then report in an order
    that depends on the clock). The gates' inputs: cos_next 0.5, cos_prev 0.3; cos_anchor 0.5, falling to -0.1 from
    epoch 2 where lr is 1e-2 (a drift gate at 0 stops those at epoch 2), or a random walk from 0.3."""
    rng, drift_rng = np.random.default_rng(7), np.random.default_rng(11)
    rows = []
    for cfg in itertools.product(LRS, TEMPS, KS):
        q = 0.5 if cfg == BEST else 0.1 * LRS.index(cfg[0]) + 0.05 * (cfg[1] == 0.1) + 0.02 * (cfg[2] == 5)
        walk, cost = np.cumsum(rng.normal(0, 0.1, 4)), rng.uniform(0.4, 1.4, 4)
        anchor = 0.3 + np.cumsum(drift_rng.normal(0, 0.15, 4)) if random_curves else \
            [0.5] + [-0.1 if cfg[0] == 1e-2 else 0.5] * 3
        for seed in seeds:
            for e in range(1, 5):
                m = walk[e - 1] if random_curves else q * e / 4 + 0.01 * seed
                rows.append(dict(zip(("lr", "temperature", "context_length"), cfg), seed=seed, epoch=e, margin=m,
                                 train_seconds=cost[e - 1] if random_curves else 1.0 + 0.5 * seed + 0.1 * e,
                                 eval_seconds=0.1, cos_anchor=anchor[e - 1], cos_next=0.5, cos_prev=0.3))
    return Table.from_frame(pd.DataFrame(rows), ("lr", "temperature", "context_length"))


@pytest.mark.parametrize("sections", [
    {"search": {"algorithm": "random"}, "scheduler": ASHA},
    {"search": {"algorithm": "optuna", "n_startup_trials": 4}, "scheduler": ASHA},
    {"search": {"algorithm": "hyperopt", "n_initial_points": 4}, "scheduler": ASHA},
    {"search": {"algorithm": "bohb", "reduction_factor": 2}},
], ids=["random+asha", "tpe+asha", "hyperopt+asha", "bohb"])
def test_a_replay_on_a_hand_written_table_reaches_its_known_best(sections):
    t = table()
    assert t.best()[0] == BEST and t.best()[1] == pytest.approx(0.505) and t.best()[2] == pytest.approx(0.01)
    rep = replay(t, search_space(SPACE, {**sections, "num_samples": 24}, seed=0), 24, workers=2, seed=0)
    assert not rep.stuck and len(rep.ended) == 24
    seconds, epochs = reach(t, rep)
    assert math.isfinite(seconds) and 1 <= epochs <= len(rep.events)
    assert any(cfg == BEST for cfg, _ in rep.ended.values())
    assert any(e < 4 for _, e in rep.ended.values()), "the scheduler stopped no trial early"


def test_fifo_runs_every_trial_to_its_last_epoch_and_the_clock_charges_recorded_seconds():
    t = table(seeds=(0,))
    rep = replay(t, search_space(SPACE, {"search": {"algorithm": "random"}, "num_samples": 6}, seed=1), 6,
                 workers=1, seed=0)
    assert sorted(e for _, e in rep.ended.values()) == [4] * 6
    per_trial = sum(1.0 + 0.1 * e + 0.1 for e in range(1, 5))
    assert rep.wall == pytest.approx(6 * per_trial)  # one worker: the epochs' seconds add up
    rep2 = replay(t, search_space(SPACE, {"search": {"algorithm": "random"}, "num_samples": 6}, seed=1), 6,
                  workers=3, seed=0)
    assert rep2.wall == pytest.approx(2 * per_trial)  # three workers, equal trials: two rounds


def test_the_spaces_gates_stop_a_replayed_trial_at_the_epoch_its_recorded_metrics_trip_them():
    t = table()
    fifo = {"search": {"algorithm": "random"}, "scheduler": {"name": "fifo"}, "num_samples": 12}
    gated = replay(t, search_space(SPACE, {**fifo, "gates": {"drift": 0.0, "margin": -2.0}}, seed=0), 12, workers=2)
    ended = list(gated.ended.values())
    assert ended and all(e == (2 if cfg[0] == 1e-2 else 4) for cfg, e in ended), ended
    assert any(cfg[0] == 1e-2 for cfg, _ in ended)
    open_ = replay(t, search_space(SPACE, fifo, seed=0), 12, workers=2)  # SPACE's gates (-2) never trip
    assert all(e == 4 for _, e in open_.ended.values())
    assert t.gate(BEST, 0, 1, Gates(drift=0.6), 1) == "drift" and t.gate(BEST, 0, 3, Gates(margin=0.9), 1) == "margin"
    assert t.gate(BEST, 0, 2, Gates(margin=0.9), 1) is None  # epoch 2: within warm-up + grace


def test_targets_pool_every_configurations_seeds_and_regret_is_read_at_equal_trial_epochs():
    """150 configurations with 3 seeds each: configuration c's seeds are q_c - d, q_c, q_c + d with d = 0.01 c / 150
    (one epoch), so its mean is q_c = c / 150 and its variance d^2; the pooled variance is the mean of the d^2."""
    lrs = [float(f"{(c + 1) * 1e-5:.3e}") for c in range(150)]  # as the space file spells them
    rows = [dict(lr=lrs[c], seed=s, epoch=1, margin=c / 150 + (s - 1) * 0.01 * c / 150, train_seconds=1.0)
            for c in range(150) for s in range(3)]
    t = Table.from_frame(pd.DataFrame(rows), ("lr",))
    got = t.targets()
    assert got["top_1pct"] == pytest.approx(1 / 150)  # the top 1% of 150: the best two, the second one's regret
    pooled = np.mean([(0.01 * c / 150) ** 2 for c in range(150)])
    assert got["within_se"] == pytest.approx(math.sqrt(pooled / 3))
    assert t.worst_regret() == pytest.approx(149 / 150)
    assert math.isnan(table(seeds=(0,)).targets()["within_se"])  # one seed: no spread to pool
    assert t.normalised([0.0, 149 / 300, math.inf]).tolist() == pytest.approx([0.0, 0.5, math.inf])
    flat = Table.from_frame(pd.DataFrame([dict(lr=lr, seed=0, epoch=1, margin=0.3, train_seconds=1.0)
                                          for lr in (1e-3, 2e-3)]), ("lr",))
    assert flat.normalised([0.0, math.inf]).tolist() == [0.0, math.inf]  # all configurations equal: scale 0
    rep = replay(t, search_space("params:\n  epochs: 1\n  lr: {grid: [%s]}\nscheduler: {name: fifo}\n"
                                 % ", ".join(f"{v:.3e}" for v in lrs),
                                 {"search": {"algorithm": "random"}, "num_samples": 20}, seed=0), 20, workers=1)
    _, epochs, regret = incumbent_regret(t, rep)
    at = regret_at(t, rep, [0, 5, 20, 1000])
    assert at[0] == math.inf and at[1] == pytest.approx(regret[4] / (149 / 150)) and at[2] == at[3]
    assert at[3] == pytest.approx(regret[-1] / (149 / 150)) and list(epochs) == list(range(1, 21))


def test_a_recorded_table_is_read_on_its_space_files_metric(tmp_path):
    """A table recorded from a space ranked by MRR@10 (lower margin where MRR is higher) is replayed on MRR@10: its
    best configuration is MRR's, not the margin's."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [dict(config_id=i, seed=s, epoch=1, **{"config/lr": lr}, margin=-lr, mrr_at_10=lr, train_seconds=1.0)
            for i, lr in enumerate((1e-3, 3e-3)) for s in (0, 1)]
    meta = {"grid_keys": ["lr"], "space": "metric: mrr_at_10\nmode: max\nparams:\n  lr: {grid: [1.0e-3, 3.0e-3]}\n"}
    t = pa.Table.from_pandas(pd.DataFrame(rows))
    pq.write_table(t.replace_schema_metadata({**t.schema.metadata, b"tune_p7_grid": json.dumps(meta).encode()}),
                   tmp_path / "grid.parquet")
    table = Table.read(tmp_path / "grid.parquet")
    assert (table.metric, table.mode) == ("mrr_at_10", "max")
    assert table.best()[:2] == ((3e-3,), pytest.approx(3e-3))


def test_diagnostics_say_which_keys_matter_and_whether_epoch_1_already_ranks_the_configurations():
    """lr alone sets the final value and temperature nothing; epoch 1 ranks the configurations in reverse."""
    rows = [dict(lr=lr, temperature=temp, seed=s, epoch=e, margin=(1.0 - lr * 100) if e == 1 else lr * 100 + e,
                 train_seconds=1.0) for lr in (1e-3, 2e-3, 3e-3) for temp in (0.05, 0.1) for s in (0, 1)
            for e in (1, 2)]
    d = Table.from_frame(pd.DataFrame(rows), ("lr", "temperature")).diagnostics()
    assert d["variance_share"] == pytest.approx({"lr": 1.0, "temperature": 0.0})
    assert d["epoch1_spearman"] == pytest.approx(-1.0)


def test_a_cost_model_replaces_the_recorded_seconds_by_the_keys_that_set_an_epochs_work():
    t = table()  # recorded: 1.1 + 0.1 e (+ 0.5 with seed 1) seconds
    model = {"keys": ["context_length"], "runs": [{"values": {"context_length": 3}, "seconds": [1.0, 1.0, 1.0, 1.0]},
                                                  {"values": {"context_length": 5}, "seconds": [2.0, 2.0, 2.0, 2.0]}]}
    timed = t.with_costs(model)
    assert timed.curves[BEST][1][1].tolist() == [2.0] * 4 and timed.curves[(1e-4, 0.05, 3)][0][1].tolist() == [1.0] * 4
    assert timed.curves[BEST][0][0] is t.curves[BEST][0][0] and timed.best() == t.best()  # the values untouched
    short = {**model, "runs": [{**r, "seconds": r["seconds"][:2]} for r in model["runs"]]}
    with pytest.raises(ValueError, match="no 4 epochs"):  # a model that cannot charge every epoch is refused
        t.with_costs(short)
    one = replay(timed, search_space(SPACE, {"search": {"algorithm": "random"}, "num_samples": 6}, seed=1), 6,
                 workers=1)
    assert one.wall == pytest.approx(sum(4.0 * (1.0 if cfg[2] == 3 else 2.0) for cfg, _ in one.ended.values()))


def test_one_epoch_top_k_trains_every_sample_one_epoch_then_finishes_the_k_best_on_the_clock():
    t = table(seeds=(0,))  # BEST leads from epoch 1; an epoch e costs 1.1 + 0.1 e seconds
    one = one_epoch_top_k(t, samples=12, k=2, workers=1)
    assert len(one.events) == 12 + 2 * 3 and [e["epochs"] for e in one.events] == list(range(1, 19))
    finished = [cfg for cfg, epochs in one.ended.values() if epochs == 4]
    assert len(finished) == 2 and BEST in finished and sorted(e for _, e in one.ended.values())[:10] == [1] * 10
    assert one.wall == pytest.approx(12 * 1.2 + 2 * (1.3 + 1.4 + 1.5))  # one worker: every epoch in turn
    three = one_epoch_top_k(t, samples=12, k=2, workers=3)
    assert three.wall == pytest.approx(4 * 1.2 + (1.3 + 1.4 + 1.5))  # 4 rounds of first epochs, then 2 side by side
    assert reach(t, three)[1] <= 12 and incumbent_regret(t, three)[2][-1] == 0.0
    assert len(one_epoch_top_k(t, samples=5, k=1, seed=3).ended) == 5  # a sample of the table, no repeats


def test_one_epoch_top_k_fails_where_the_epoch_1_ranking_is_reversed_later():
    """The late starter is last at epoch 1 and best from epoch 3: top-1 finishes another configuration and never
    reaches the best; with every configuration finished (k = all) it does."""
    rows = []
    for lr, curve in {1e-4: [0.3, 0.32, 0.34, 0.35], 1e-3: [0.28, 0.3, 0.31, 0.33], 1e-2: [0.0, 0.3, 0.8, 0.9]}.items():
        rows += [dict(lr=lr, seed=0, epoch=e, margin=m, train_seconds=1.0) for e, m in enumerate(curve, 1)]
    t = Table.from_frame(pd.DataFrame(rows), ("lr",))
    assert t.best()[0] == (1e-2,)
    top1 = one_epoch_top_k(t, samples=3, k=1, workers=2)
    assert [cfg for cfg, epochs in top1.ended.values() if epochs == 4] == [(1e-4,)]
    assert reach(t, top1) == (math.inf, math.inf) and incumbent_regret(t, top1)[2][-1] == pytest.approx(0.55)
    every = one_epoch_top_k(t, samples=3, k=3, workers=2)
    assert math.isfinite(reach(t, every)[1]) and len(every.events) == 3 + 3 * 3


def real_runs(ray_address, tmp_path, sections: dict, seeds, num_samples: int, workers: int, time_scale: float):
    """tune_run (the real Tune controller) on the random-curve table for each search seed, in a process of its own
    (Ray reads its token settings when first imported, and this process imported it before the session's node was
    up): {seed: [(configuration, last epoch) of every trial in creation order]}."""
    import json

    from conftest import REPO, run_cli

    script = ("import json, sys; sys.path.insert(0, 'tests/tuning'); import ray; from test_replay import *; "
              f"ray.init(address={ray_address!r} or 'local', include_dashboard=False, log_to_driver=False); "
              f"print('ENDED', json.dumps({{s: tune_run(table(seeds=(0,), random_curves=True), "
              f"search_space(SPACE, {{**{sections!r}, 'num_samples': {num_samples}}}, seed=s), {num_samples}, "
              f"{str(tmp_path)!r} + f'/{{s}}', workers={workers}, time_scale={time_scale}) for s in {list(seeds)!r}}}))")
    r = run_cli("-c", script, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ended = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("ENDED"))[6:])
    return {int(s): [(tuple(c), e) for c, e in runs] for s, runs in ended.items()}


def test_the_real_tune_controller_and_the_replay_make_the_same_stop_decisions_for_tpe(ray_cluster, tmp_path):
    """One worker: TPE's suggestions and ASHA's stops trial by trial (random + ASHA: on four workers, below)."""
    sections = {"search": {"algorithm": "optuna", "n_startup_trials": 3}, "scheduler": ASHA}
    t = table(seeds=(0,), random_curves=True)
    real = real_runs(ray_cluster, tmp_path, sections, [3], 10, workers=1, time_scale=0.0)[3]
    simulated = list(replay(t, search_space(SPACE, {**sections, "num_samples": 10}, seed=3), 10, workers=1).ended
                     .values())
    assert real == simulated  # trial by trial, in creation order
    assert any(e < 4 for _, e in simulated) and any(e == 4 for _, e in simulated), "no decision to compare"


def test_on_four_workers_the_replay_makes_the_real_controllers_promotions_and_stops_in_nine_trials_of_ten(
        ray_cluster, tmp_path):
    """Asynchrony, the clock, ASHA's promotion order and the gates as the replay has them: 12 trials of random +
    ASHA with a drift gate on 4 workers whose epochs sleep their recorded seconds (x 0.3), 3 search seeds; a trial
    matches when it ends at the same epoch of the same configuration in both (trials compared in creation order)."""
    sections = {"search": {"algorithm": "random"}, "scheduler": ASHA, "gates": {"drift": 0.0, "margin": -2.0}}
    seeds = (0, 1, 2)
    t = table(seeds=(0,), random_curves=True)
    real = real_runs(ray_cluster, tmp_path, sections, seeds, 12, workers=4, time_scale=0.3)
    pairs = [(a, b) for s in seeds for a, b in zip(real[s], replay(
        t, search_space(SPACE, {**sections, "num_samples": 12}, seed=s), 12, workers=4).ended.values())]
    assert len(pairs) == 36 and all(a[0] == b[0] for a, b in pairs)  # the same configurations, in the same order
    matched = sum(a == b for a, b in pairs) / len(pairs)
    print(f"{matched:.0%} of trials ended at the same epoch")
    assert matched >= 0.9, [(a[1], b[1]) for a, b in pairs]
    ends = [b[1] for _, b in pairs]
    assert len(set(ends)) >= 3, "ASHA made too few different decisions to compare"
    drifted = [a for a, _ in pairs if t.gate(a[0], 0, a[1], Gates(drift=0.0, margin=-2.0), 2)]
    assert drifted, "no trial was stopped by its gate"


GRID_SPACE = """
num_samples: 2
metric: margin
mode: max
params:
  epochs: 3
  lr: {grid: [1.0e-4, 1.0e-3, 1.0e-2]}
  temperature: {grid: [0.05, 0.1]}
scheduler: {name: SCHED}
gates: {drift: -2.0, margin: -2.0, grace_epochs: 1}
confirm: {top: 0}
"""


def grid_experiment(root, sched="fifo", drop=0):
    """A finished experiment folder as search.py leaves it (search record, one result.json per trial), written by
    hand: 6 configurations x 2 repeats x 3 epochs; ``drop`` trials left out."""
    import json

    space = root / "space.yaml"
    space.write_text(GRID_SPACE.replace("SCHED", sched))
    exp = root / "exp"
    exp.mkdir()
    (exp / "tune_p7_search.json").write_text(json.dumps({"space": str(space), "metric": "margin", "mode": "max"}))
    trials = [(lr, t, rep) for lr in (1e-4, 1e-3, 1e-2) for t in (0.05, 0.1) for rep in (0, 1)]
    for i, (lr, t, rep) in enumerate(trials[drop:]):
        d = exp / f"train_trial_{i:05d}"
        d.mkdir()
        q = 0.3 if (lr, t) == (1e-3, 0.1) else 0.1 * lr * 100
        d.joinpath("result.json").write_text("".join(
            json.dumps({"epoch": e, "margin": q * e / 3 + 0.01 * rep, "config": {"lr": lr, "temperature": t,
                        "epochs": 3}, "train_seconds": 1.0, "eval_seconds": 0.1}) + "\n" for e in (1, 2, 3)))
    return exp


def test_tune_p7_replay_replays_a_search_against_a_finished_grid(tmp_path):
    from conftest import run_cli

    exp = grid_experiment(tmp_path)
    search = tmp_path / "search.yaml"
    search.write_text("num_samples: 8\nsearch: {algorithm: optuna, n_startup_trials: 3}\n"
                      "scheduler: {name: asha, grace_period: 1, reduction_factor: 2}\n")
    r = run_cli("-c", "from tune_p7.commands import main; main()", "replay", exp, "--search", search, "--replays", "3")
    assert r.returncode == 0, r.stderr
    assert "6 configurations x 2 seed(s)" in r.stdout and "'lr': 0.001, 'temperature': 0.1" in r.stdout
    assert "your search" in r.stdout and "(optuna, asha, 8 trials, 4 workers)" in r.stdout
    assert "random, same scheduler" in r.stdout


@pytest.mark.parametrize("case", ["missing trial", "asha experiment"])
def test_tune_p7_replay_refuses_an_experiment_that_is_not_a_complete_grid(tmp_path, case):
    from conftest import run_cli

    exp = grid_experiment(tmp_path, drop=1) if case == "missing trial" else grid_experiment(tmp_path, sched="asha")
    search = tmp_path / "search.yaml"
    search.write_text("search: {algorithm: random}\n")
    r = run_cli("-c", "from tune_p7.commands import main; main()", "replay", exp, "--search", search)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1
    assert ("not a complete grid: 1 of 6" if case == "missing trial" else "not a FIFO full-grid") in r.stderr
