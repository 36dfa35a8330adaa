"""The Ray Tune trainable: config -> data (from the object store) -> model -> the core loop -> tune.report."""
from __future__ import annotations

import math
import secrets
import tempfile

import ray
import torch
from ray import tune

from tune_p7.core.config import P7Config
from tune_p7.core.gates import Gates, gate
from tune_p7.core.loop import NonFiniteLoss, article_tables, config_at, fit
from tune_p7.data.folds import fold_data
from tune_p7.data.loading import P7Data
from tune_p7.space.file import CROSSFIT_KEY, trial_config, trial_schedule
from tune_p7.tuning import checkpoint, live_metrics
ARTICLES = "articles.pt"  # a confirmation seed's per-article sums (loop.article_tables), in its last checkpoint


def train_trial(config: dict, data: P7Data, gates: Gates, mutated: tuple[str, ...] = (),
                articles: bool = False) -> None:
    """One grid point. ``data`` arrives through the object store (read-only, zero-copy numpy on this node).

    Reports every epoch's metrics plus ``gate``, ``node``, ``trial_id``, the lineage fields (``restore``) and
    ``hp/<key>`` (the epoch's value of each key in ``mutated``, the keys a PBT scheduler or a followed schedule
    changes) with a checkpoint. ``articles`` (the confirmation): the last epoch's checkpoint also holds the
    per-article sums on val and the held-out split (ARTICLES); a config's CROSSFIT_KEY makes the run train
    without its fold and hold it out (data/folds.py). When Tune restarts it from a checkpoint, see
    ``restore``. A NaN/Inf loss ends the trial with its reason in ``error`` (not retried: it would fail the same
    way again).
    """
    ctx = ray.get_runtime_context()
    cpus = ctx.get_assigned_resources().get("CPU", 1)
    cfg = P7Config.from_dict({**trial_config(config), "threads": max(1, int(cpus))}, source="trial config")
    schedule = trial_schedule(config)
    crossfit = config.get(CROSSFIT_KEY)
    if crossfit:
        data, _ = fold_data(data, crossfit["fold"], crossfit["folds"], crossfit["seed"])
    node = ctx.get_node_id()
    trial_id = tune.get_context().get_trial_id()
    experiment = tune.get_context().get_experiment_name()
    state, origin = None, {"lineage": secrets.token_hex(4), "exploited_from": None, "parent_lineage": None,
                           "parent_epoch": None}
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        state, origin = restore(ckpt, trial_id)
    else:
        state, origin = _unregistered(trial_id) or (state, origin)
    fixed = {"node": node, "trial_id": trial_id, **origin}

    def report(metrics: dict, st: dict | None) -> None:
        now = config_at(cfg, schedule, metrics["epoch"])
        metrics = {**metrics, "gate": gate(metrics, gates, cfg.warmup_epochs), **fixed,
                   **{f"hp/{k}": getattr(now, k) for k in mutated}}
        live_metrics.publish(metrics, experiment, trial_id)  # the dashboard's / Prometheus' live view
        if st is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            checkpoint.save(d, st, metrics, durable=False)  # Tune copies the folder to storage, then it goes
            if articles and metrics["epoch"] >= cfg.epochs:
                torch.save(article_tables(cfg, data, st["model"], metrics["bf16"],
                                          crossfit and crossfit["common_context"]), f"{d}/{ARTICLES}")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    try:
        fit(cfg, data, report, state, schedule)
    except NonFiniteLoss:
        return


def _unregistered(trial_id: str) -> tuple[dict, dict] | None:
    """``restore`` from the checkpoints this trial stored that Tune's state does not know (checkpoint.unregistered),
    which are then deleted (checkpoint.discard_all); None when there are none or none loads (cut short by the kill
    that lost them: the trial trains from scratch)."""
    where = tune.get_context().get_storage()
    fs, folder = where.storage_filesystem, where.trial_fs_path
    path = checkpoint.unregistered(fs, folder, trial_id)
    if path is None:
        return None
    try:
        restored = restore(tune.Checkpoint(path, filesystem=fs), trial_id)
    except checkpoint.UNLOADABLE:
        restored = None
    checkpoint.discard_all(fs, folder)
    return restored


def restore(ckpt: tune.Checkpoint, trial_id: str) -> tuple[dict, dict]:
    """(the state to go on from, the ``lineage``, ``exploited_from``, ``parent_lineage`` and ``parent_epoch`` of the
    results to come: a lineage is one run of weights under one config; an exploit starts a new one from the
    parent lineage's checkpoint of parent_epoch, which is how pbt_history.trained_schedule follows a model back).

    The trial's own checkpoint (a restart, a resumed experiment, a PBT pause, or one it stored that Tune's state
    does not know): go on from the newest one of its lineage it stored (checkpoint.resume_from), and report the
    stored checkpoints' results again, marked ``resumed`` — Tune registers a checkpoint before it records the result
    reported with it, and a driver killed in between loses that result (a line may appear twice, none is missing).
    Another trial's checkpoint (a PBT exploit: the ``trial_id`` in its metrics is not this trial's): exactly that
    checkpoint, not the newer ones of its trial, and nothing reported again (those results are the other trial's); a
    new lineage starts.
    """
    fs, path = ckpt.filesystem, ckpt.path
    handed = checkpoint.read_metrics(fs, path) or {}
    owner = handed.get("trial_id", trial_id)
    if owner != trial_id:  # the other trial's best epoch is not this trial's work: its own best starts anew
        state = {**checkpoint.load_from(fs, path), "best": {"margin": -math.inf, "epoch": 0}}
        return state, {"lineage": secrets.token_hex(4), "exploited_from": owner,
                       "parent_lineage": handed.get("lineage"), "parent_epoch": handed.get("epoch")}
    state, restored = checkpoint.resume_from(fs, path)
    for metrics in restored:
        tune.report({**metrics, "resumed": True})
    last = restored[-1]
    return state, {"lineage": last.get("lineage", secrets.token_hex(4)),
                   **{k: last.get(k) for k in ("exploited_from", "parent_lineage", "parent_epoch")}}
