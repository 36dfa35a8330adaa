"""Population-based training: PBT and PB2 from the space file, exploits that change a trial's config and weights
mid-run, values kept inside their ranges, the schedule each trial ran in the summary, and resume after a kill."""
import json
import random
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from ray.tune.schedulers.pbt import _explore

from conftest import REPO, kill_when, run_cli
from test_search import SEARCH, results, search, space
from tune_p7.errors import InputError
from tune_p7.space.file import load_space
from tune_p7.tuning import checkpoint
from tune_p7.tuning.pbt import Clip, build_scheduler
from tune_p7.tuning.pbt_history import trained_schedule, schedule

pytestmark = pytest.mark.usefixtures("ray_cluster")  # searches join the session's Ray node (conftest)

TINY = """
params:
  d_model: 32
  n_layers: 1
  n_heads: 4
  d_ff: 64
  warmup_epochs: 1
  batch_size: 128
"""
LR = (1.0e-5, 3.0e-3)


def population(tmp_path, name="pbt", epochs=5, confirm="{top: 0}"):
    """4 trials: lr 1e-5 barely moves the model in a few epochs, so those trials fall to the bottom and exploit the
    3e-3 ones; each exploit perturbs lr by x0.8 or x1.2 (x1.2 of 3e-3 is clipped back to 3e-3)."""
    return space(tmp_path, TINY + f"""  epochs: {epochs}
  lr: {{grid: [1.0e-5, 3.0e-3]}}
num_samples: 2
scheduler:
  name: {name}
  perturbation_interval: 1
  mutations:
    lr: {{loguniform: [1.0e-5, 3.0e-3]}}
gates: {{margin: -2.0, drift: -2.0}}
checkpoints: {{num_to_keep: 3}}
resources: {{cpus_per_trial: 0.5}}
confirm: {confirm}
""")


def lineages(rows):
    """lineage -> its rows, for one trial's results."""
    out = {}
    for r in rows:
        out.setdefault(r["lineage"], []).append(r)
    return out


def test_pbt_search_exploits_another_trials_checkpoint_and_the_summary_accounts_for_every_trial(tmp_path,
                                                                                                 strong_store):
    # --reuse-actors: PBT restarts a trial at every exploit, and a new worker per restart costs seconds each
    search("--reuse-actors", "--space", population(tmp_path, confirm="{top: 4, seeds: 1}"), "--data", strong_store,
           "--storage", tmp_path, "--name", "pbt", "--no-probe", timeout=900)
    exp = tmp_path / "pbt"
    res = {rows[0]["trial_id"]: rows for rows in results(exp).values()}
    assert len(res) == 4
    exploited = []
    for tid, rows in res.items():
        assert all(r["trial_id"] == tid for r in rows)
        assert all(LR[0] <= r["hp/lr"] <= LR[1] for r in rows)  # perturbations (x0.8, x1.2) clipped to the range
        assert all(r["hp/lr"] == r["config"]["lr"] for r in rows)  # Tune's config copy agrees after exploits
        for lineage, part in lineages(rows).items():
            assert len({r["hp/lr"] for r in part}) == 1  # one config per lineage
            if part[0]["exploited_from"] is not None:
                exploited.append((tid, part))
    assert exploited, "no exploit happened"
    for tid, part in exploited:
        assert part[0]["exploited_from"] in res and part[0]["exploited_from"] != tid
    assert any(rows[0]["hp/lr"] != rows[-1]["hp/lr"] for rows in res.values())  # a config changed mid-run
    for rows in res.values():  # every epoch of every lineage it ran is in the trial's result.json
        for part in lineages(rows).values():
            assert sorted({r["epoch"] for r in part}) == list(range(part[0]["epoch"], part[-1]["epoch"] + 1))
        assert rows[0]["epoch"] == 1 and rows[-1]["epoch"] == 5
    # the donor's results are never reported as the recipient's: every lineage belongs to one trial
    owners = {}
    for tid, rows in res.items():
        for lineage in lineages(rows):
            assert owners.setdefault(lineage, tid) == tid
    df = pd.read_parquet(exp / "summary.parquet")
    assert sorted(df["trial_id"]) == sorted(res) and (df["status"] == "completed").all()
    assert (df["stopped_epoch"] == 5).all()
    md = (exp / "summary.md").read_text()
    assert "## Schedules" in md
    tid, part = exploited[0]
    assert len(df) <= 5  # the Schedules section lists the top 5: here every trial
    assert f"| {tid} | {part[0]['epoch']} | {part[0]['exploited_from']} | lr " in md
    # no trial is credited with an epoch another trial trained: each best margin is one of its own epochs'
    for r in df.itertuples():
        own = {row["epoch"]: row["margin"] for row in res[r.trial_id]}
        assert own[r.best_epoch] == pytest.approx(r.best_margin) and r.best_margin == pytest.approx(max(own.values()))

    # the confirmation follows each confirmed trial's schedule epoch by epoch (new seeds, from scratch)
    every = [row for rows in res.values() for row in rows]
    plan = json.loads((exp / "confirm.json").read_text())
    assert any(len(c.get("schedule", [])) > 1 for c in plan["configs"]), "no confirmed trial had an exploit"
    confirm_rows = results(exp / "confirm")
    for c in plan["configs"]:
        want = trained_lr(every, res[c["trial_id"]][-1]["lineage"])
        assert sorted(want) == list(range(1, 6))
        mine = [rows for rows in confirm_rows.values() if rows[0]["config"]["run"].get("schedule") == c.get("schedule")
                and rows[0]["config"]["run"]["lr"] == c["config"].get("lr")]
        assert mine, c
        for rows in mine:
            assert {r["epoch"]: r["hp/lr"] for r in rows} == pytest.approx(want)


def trained_lr(rows, lineage):
    """{epoch: lr} that trained the model of ``lineage`` at its last epoch: its own rows, then, before the epoch
    it went on from, its parent lineage's rows (the rows of every trial of the search), and so on back."""
    out = {}
    upto = None
    while lineage is not None:
        mine = [r for r in rows if r["lineage"] == lineage and (upto is None or r["epoch"] <= upto)]
        for r in mine:
            out.setdefault(r["epoch"], r["hp/lr"])
        first = min(mine, key=lambda r: r["epoch"])
        lineage, upto = first.get("parent_lineage"), first.get("parent_epoch")
    return out


def test_trained_schedule_follows_each_exploit_back_to_the_lineage_trained_from_scratch():
    curves = {"t1": [{"epoch": e, "lineage": "a", "hp/lr": 1.0} for e in (1, 2, 3)],
              "t2": [{"epoch": e, "lineage": "b", "hp/lr": 2.0} for e in (1, 2)]
              + [{"epoch": e, "lineage": "c", "hp/lr": 1.2, "parent_lineage": "a", "parent_epoch": 2,
                  "exploited_from": "t1"} for e in (3, 4)],
              "t3": [{"epoch": e, "lineage": "d", "hp/lr": 3.0} for e in (1, 2, 3, 4)]
              + [{"epoch": 4, "lineage": "d", "hp/lr": 3.0, "resumed": True}]
              + [{"epoch": e, "lineage": "e", "hp/lr": 1.44, "parent_lineage": "c", "parent_epoch": 4,
                  "exploited_from": "t2"} for e in (5, 6)]}
    assert trained_schedule(curves, "t3") == [(1, {"lr": 1.0}), (3, {"lr": 1.2}), (5, {"lr": 1.44})]
    assert trained_schedule(curves, "t1") == [(1, {"lr": 1.0})]
    assert trained_schedule(curves, "nope") == []


def test_a_followed_schedule_changes_the_config_from_its_epochs_on():
    from tune_p7.core.config import P7Config
    from tune_p7.core.loop import config_at

    sched = [(1, {"lr": 1e-3}), (3, {"lr": 2e-3, "margin": 0.1})]
    base = P7Config(lr=5e-4)
    assert [config_at(base, sched, e).lr for e in (1, 2, 3, 4)] == [1e-3, 1e-3, 2e-3, 2e-3]
    assert config_at(base, sched, 2).margin == base.margin and config_at(base, sched, 3).margin == 0.1
    assert config_at(base, None, 3) == base


def test_pb2_search_runs_end_to_end_inside_its_bounds(tmp_path, small_store):
    search("--reuse-actors", "--space", population(tmp_path, "pb2", epochs=4), "--data", small_store, "--storage",
           tmp_path, "--name", "pb2", "--no-probe")
    exp = tmp_path / "pb2"
    res = results(exp)
    assert len(res) == 4
    assert all(LR[0] <= r["hp/lr"] <= LR[1] for rows in res.values() for r in rows)
    df = pd.read_parquet(exp / "summary.parquet")
    assert len(df) == 4 and (df["status"] == "completed").all()


def test_killed_pbt_driver_resumes_and_every_trial_ends(tmp_path, small_store):
    epochs = 6  # long enough that the kill lands mid-search
    args = [sys.executable, SEARCH, "--num-cpus", 2, "--reuse-actors", "--space", population(tmp_path, epochs=epochs),
            "--data", small_store, "--storage", tmp_path, "--name", "res", "--no-probe", "--no-plots"]
    exp = tmp_path / "res"
    kill_when(args, exp, "checkpoint_000001")
    # killed mid-search: the summary comes only after every trial ended (result.json lines may still be unflushed)
    assert not (exp / "summary.parquet").exists()
    search("--resume", "--name", "res", "--storage", tmp_path)
    after = results(exp)
    df = pd.read_parquet(exp / "summary.parquet")
    assert len(df) == 4 and df["trial_id"].is_unique and len(after) == 4
    assert (df["status"] == "completed").all() and (df["stopped_epoch"] == epochs).all()
    for rows in after.values():
        assert rows[-1]["epoch"] == epochs and all(LR[0] <= r["hp/lr"] <= LR[1] for r in rows)


def test_an_exploit_loads_exactly_the_handed_checkpoint_and_a_restore_stays_in_its_lineage(tmp_path):
    """A trial folder under PBT holds two lineages: epochs 1-5 of its first config (A), then, after it exploited
    another trial's epoch-2 checkpoint, epochs 3-4 of the new one (B). Resuming from B's epoch 3 goes on from B's
    epoch 4, not from A's later epoch 5."""
    import pyarrow.fs as pafs

    fs, n = pafs.LocalFileSystem(), 0
    for lineage, epochs in (("A", range(1, 6)), ("B", range(3, 5))):
        for epoch in epochs:
            folder = tmp_path / f"checkpoint_{n:06d}"
            folder.mkdir()
            checkpoint.save(folder, {"epoch": epoch, "w": torch.tensor(float(n))},
                            {"epoch": epoch, "lineage": lineage, "trial_id": "t1"})
            n += 1
    state, metrics = checkpoint.resume_from(fs, str(tmp_path / "checkpoint_000005"))  # B, epoch 3
    assert state["epoch"] == 4 and float(state["w"]) == 6.0
    assert [(m["lineage"], m["epoch"]) for m in metrics] == [("B", 3), ("B", 4)]
    state, metrics = checkpoint.resume_from(fs, str(tmp_path / "checkpoint_000001"))  # A, epoch 2
    assert state["epoch"] == 5 and [m["epoch"] for m in metrics] == [2, 3, 4, 5]


def test_pbt_explore_keeps_every_mutated_value_inside_its_range(tmp_path):
    path = space(tmp_path, TINY + """  epochs: 4
num_samples: 4
scheduler:
  name: pbt
  perturbation_interval: 1
  mutations:
    lr: {loguniform: [1.0e-4, 3.0e-3]}
    temperature: {uniform: [0.05, 0.10]}
    margin: {choice: [0.10, 0.05, 0.07]}
checkpoints: {num_to_keep: 3}
""")
    sched = build_scheduler(load_space(path))
    random.seed(0)
    np.random.seed(0)  # resamples draw from Tune's samplers, which use numpy's generator
    config, seen = {"lr": 3.0e-3, "temperature": 0.05, "margin": 0.07}, []
    for _ in range(300):  # a walk of perturbations and resamples from the edges
        config, _ = _explore(config, sched._hyperparam_mutations, sched._resample_probability,
                             sched._perturbation_factors, sched._custom_explore_fn)
        seen.append(config)
    assert all(1.0e-4 <= c["lr"] <= 3.0e-3 and 0.05 <= c["temperature"] <= 0.10 for c in seen)
    assert {c["margin"] for c in seen} == {0.05, 0.07, 0.10}
    assert max(c["lr"] for c in seen) == 3.0e-3 and min(c["temperature"] for c in seen) == 0.05  # clipped edges
    assert Clip({"lr": (1e-4, 3e-3)})({"lr": 3.0000001e-3, "seed": 1}) == {"lr": 3e-3, "seed": 1}  # PB2's float32


def test_schedule_lists_each_lineage_once_with_its_values_and_donor():
    rows = [{"epoch": 1, "lineage": "a", "exploited_from": None, "hp/lr": 1e-5},
            {"epoch": 2, "lineage": "a", "exploited_from": None, "hp/lr": 1e-5},
            {"epoch": 3, "lineage": "b", "exploited_from": "t2", "hp/lr": 2.4e-3},
            {"epoch": 3, "lineage": "b", "exploited_from": "t2", "hp/lr": 2.4e-3, "resumed": True},
            {"epoch": 4, "lineage": "b", "exploited_from": "t2", "hp/lr": 2.4e-3}]
    assert schedule(rows) == [(1, None, {"lr": 1e-5}), (3, "t2", {"lr": 2.4e-3})]


BAD = [
    ("mutations: {d_model: {choice: [32, 64]}}", "pbt", ["scheduler.mutations.d_model", "cannot change mid-run"]),
    ("mutations: {context_length: {choice: [3, 5]}}", "pbt", ["context_length cannot change mid-run"]),
    ("mutations: {lrr: {uniform: [0.1, 0.2]}}", "pbt", ["unknown key 'scheduler.mutations.lrr'"]),
    ("mutations: {lr: {grid: [0.001, 0.002]}}", "pbt", ["scheduler.mutations.lr", "sampler is one of"]),
    ("mutations: {lr: 0.001}", "pbt", ["scheduler.mutations.lr", "expected"]),
    ("mutations: {lr: {loguniform: [0.01, 0.001]}}", "pbt", ["scheduler.mutations.lr", "low < high"]),
    ("mutations: {temperature: {uniform: [0.05, 20.0]}}", "pbt", ["temperature", "out of range"]),
    ("mutations: {margin: {choice: [0.05, 0.07]}}", "pb2", ["scheduler.mutations.margin", "continuous bounds only"]),
    ("mutations: {lr: {uniform: [0.001, 0.002]}}", "pbt", ["params.lr", "outside scheduler.mutations.lr"]),
    ("grace_period: 2, mutations: {lr: {uniform: [0.0001, 0.01]}}", "pbt", ["scheduler.grace_period",
                                                                             "does not apply to scheduler pbt"]),
    ("resample_probability: 0.5, mutations: {lr: {uniform: [0.0001, 0.01]}}", "pb2",
     ["scheduler.resample_probability", "does not apply to scheduler pb2"]),
    ("mutations: {lr: {uniform: [0.0001, 0.01]}}", "asha", ["scheduler.mutations", "does not apply to scheduler asha"]),
    ("perturbation_interval: 1", "pbt", ["scheduler.mutations", "needs a mapping of keys to mutate"]),
    ("quantile_fraction: 0.7, mutations: {lr: {uniform: [0.0001, 0.01]}}", "pbt", ["quantile_fraction"]),
    ("perturbation_interval: 4, mutations: {lr: {uniform: [0.0001, 0.01]}}", "pbt", ["no trial would ever be"]),
    ("colour: red, mutations: {lr: {uniform: [0.0001, 0.01]}}", "pbt", ["unknown key 'scheduler.colour'"]),
]


@pytest.mark.parametrize("scheduler, name, words", BAD)
def test_bad_mutation_spec_names_file_and_key(tmp_path, scheduler, name, words):
    path = space(tmp_path, TINY + f"  epochs: 4\n  lr: 0.005\nnum_samples: 4\nscheduler: {{name: {name}, {scheduler}}}\n"
                 "checkpoints: {num_to_keep: 3}\n")
    with pytest.raises(InputError) as e:
        load_space(path)
    msg = str(e.value)
    assert msg.startswith(str(path)) and "\n" not in msg
    for w in words:
        assert w in msg, msg


@pytest.mark.parametrize("extra, words", [
    ("num_samples: 1\n", ["population of >= 2 trials"]),
    ("num_samples: 4\ncheckpoints: {num_to_keep: 2}\n", ["checkpoints.num_to_keep", "needs >= 3"]),
    ("num_samples: 4\nruns:\n  - {lr: 0.001}\n", ["runs[0]", "'lr' is mutated by the scheduler"]),
])
def test_bad_population_is_one_line_exit_2_and_nothing_written(tmp_path, small_store, extra, words):
    sp = space(tmp_path, TINY + "  epochs: 4\nscheduler: {name: pbt, mutations: {lr: {uniform: [0.0001, 0.01]}}}\n"
               + extra)
    store = tmp_path / "results"
    store.mkdir()
    r = run_cli(SEARCH, "--space", sp, "--data", small_store, "--storage", store, "--name", "x", timeout=120)
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in r.stderr, err
    for w in words:
        assert w in err, err
    assert list(store.iterdir()) == []


def test_shipped_pbt_space_loads_and_mutates_only_keys_that_can_change(tmp_path):
    sp = load_space(REPO / "search_spaces" / "pbt.yaml")
    assert sp.scheduler.name == "pbt" and sp.description
    assert {"lr", "temperature", "margin", "w_rank", "w_margin", "w_teacher"} <= set(sp.scheduler.mutations)
    assert sp.num_to_keep >= 3
    json.dumps(sp.param_space(), default=str)  # the initial draws come from the mutation ranges
    runtime = Path(REPO / "requirements.txt").read_text().splitlines()
    assert any(line.startswith("scikit-learn==") for line in runtime)  # what pb2 imports (ray.tune.schedulers.pb2)
