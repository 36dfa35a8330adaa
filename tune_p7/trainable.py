"""The Ray Tune trainable: config -> data (from the object store) -> model -> the core loop -> tune.report."""
from __future__ import annotations

import tempfile

import ray
from ray import tune

from tune_p7 import checkpoint
from tune_p7.config import P7Config
from tune_p7.data import P7Data
from tune_p7.gates import gate
from tune_p7.loop import NonFiniteLoss, fit
from tune_p7.space import Gates, trial_config


def train_trial(config: dict, data: P7Data, gates: Gates) -> None:
    """One grid point. ``data`` arrives through the object store (read-only, zero-copy numpy on this node).

    Reports every epoch's metrics plus ``gate`` and ``node`` with a checkpoint; when Tune restarts it, resumes from
    the newest checkpoint it stored (checkpoint.resume_from). A NaN/Inf loss ends the trial with its reason in
    ``error`` (not retried: it would fail the same way again).
    """
    ctx = ray.get_runtime_context()
    cpus = ctx.get_assigned_resources().get("CPU", 1)
    cfg = P7Config.from_dict({**trial_config(config), "threads": max(1, int(cpus))}, source="trial config")
    node = ctx.get_node_id()
    state = None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        state, restored = checkpoint.resume_from(ckpt.filesystem, ckpt.path)
        # Tune registers a checkpoint before it records the result reported with it, and a driver killed in between
        # loses that result: report the stored checkpoints' results again (a line may appear twice, none missing)
        for metrics in restored:
            tune.report({**metrics, "resumed": True})

    def report(metrics: dict, st: dict | None) -> None:
        metrics = {**metrics, "gate": gate(metrics, gates, cfg.warmup_epochs), "node": node}
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
