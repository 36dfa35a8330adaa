"""The Ray Tune trainable: config -> data (from the object store) -> model -> the core loop -> tune.report."""
from __future__ import annotations

import secrets
import tempfile

import ray
from ray import tune

from tune_p7 import checkpoint, live_metrics
from tune_p7.config import P7Config
from tune_p7.data import P7Data
from tune_p7.gates import gate
from tune_p7.loop import NonFiniteLoss, fit
from tune_p7.space import Gates, trial_config


def train_trial(config: dict, data: P7Data, gates: Gates, mutated: tuple[str, ...] = ()) -> None:
    """One grid point. ``data`` arrives through the object store (read-only, zero-copy numpy on this node).

    Reports every epoch's metrics plus ``gate``, ``node``, ``trial_id``, ``lineage``, ``exploited_from`` and
    ``hp/<key>`` (this run's value of each key in ``mutated``, the keys a PBT scheduler changes) with a checkpoint.
    When Tune restarts it from a checkpoint, see ``restore``. A NaN/Inf loss ends the trial with its reason in
    ``error`` (not retried: it would fail the same way again).
    """
    ctx = ray.get_runtime_context()
    cpus = ctx.get_assigned_resources().get("CPU", 1)
    cfg = P7Config.from_dict({**trial_config(config), "threads": max(1, int(cpus))}, source="trial config")
    node = ctx.get_node_id()
    trial_id = tune.get_context().get_trial_id()
    experiment = tune.get_context().get_experiment_name()
    state, origin = None, {"lineage": secrets.token_hex(4), "exploited_from": None}
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        state, origin = restore(ckpt, trial_id)
    fixed = {"node": node, "trial_id": trial_id, **origin, **{f"hp/{k}": getattr(cfg, k) for k in mutated}}

    def report(metrics: dict, st: dict | None) -> None:
        metrics = {**metrics, "gate": gate(metrics, gates, cfg.warmup_epochs), **fixed}
        live_metrics.publish(metrics, experiment, trial_id)  # the dashboard's / Prometheus' live view
        if st is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            checkpoint.save(d, st, metrics, durable=False)  # Tune copies the folder to storage, then it goes
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    try:
        fit(cfg, data, report, state)
    except NonFiniteLoss:
        return


def restore(ckpt: tune.Checkpoint, trial_id: str) -> tuple[dict, dict]:
    """(the state to go on from, the ``lineage`` and ``exploited_from`` of the results to come).

    The trial's own checkpoint (a restart, a resumed experiment, a PBT pause): go on from the newest one of its
    lineage it stored (checkpoint.resume_from), and report the stored checkpoints' results again, marked
    ``resumed`` — Tune registers a checkpoint before it records the result reported with it, and a driver killed
    in between loses that result (a line may appear twice, none is missing). Another trial's checkpoint (a PBT
    exploit: the ``trial_id`` in its metrics is not this trial's): exactly that checkpoint, not the newer ones of
    its trial, and nothing reported again (those results are the other trial's); a new lineage starts.
    """
    fs, path = ckpt.filesystem, ckpt.path
    owner = (checkpoint.read_metrics(fs, path) or {}).get("trial_id", trial_id)
    if owner != trial_id:
        return checkpoint.load_from(fs, path), {"lineage": secrets.token_hex(4), "exploited_from": owner}
    state, restored = checkpoint.resume_from(fs, path)
    for metrics in restored:
        tune.report({**metrics, "resumed": True})
    last = restored[-1]
    return state, {"lineage": last.get("lineage", secrets.token_hex(4)), "exploited_from": last.get("exploited_from")}
