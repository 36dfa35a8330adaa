"""Per-trial live metrics for Prometheus: every reported epoch sets Ray custom gauges (``ray.util.metrics``), which
the node's metrics agent exports on its metrics port as ``ray_tune_p7_<name>{experiment=...,trial_id=...}``.
A Prometheus that reads the service-discovery file Ray writes into its session folder scrapes them, and Grafana
(or Prometheus' own graph page) draws live curves per trial (docs/cluster.md, Metrics).
"""
from __future__ import annotations

import math
from typing import Mapping

GAUGES = {  # reported metric -> (gauge name, description)
    "epoch": ("tune_p7_epoch", "epochs a tune_p7 trial has finished"),
    "margin": ("tune_p7_val_margin", "val margin cos(pred, next) - cos(pred, prev) of a tune_p7 trial"),
    "cos_next": ("tune_p7_val_cos_next", "val cos(pred, next) of a tune_p7 trial"),
    "r_at_5": ("tune_p7_val_r_at_5", "val recall@5 of the next chunk in the bank, of a tune_p7 trial"),
}
TAGS = ("experiment", "trial_id")
_gauges: dict = {}  # one set per process: a Gauge registers its name with the process's metrics exporter


def publish(metrics: Mapping, experiment: str, trial_id: str) -> None:
    """Set the gauges from one epoch's metrics; never lets a metrics problem end a trial."""
    try:
        if not _gauges:
            from ray.util.metrics import Gauge

            _gauges.update({k: Gauge(name, description=text, tag_keys=TAGS) for k, (name, text) in GAUGES.items()})
        tags = {"experiment": experiment, "trial_id": trial_id}
        for key, gauge in _gauges.items():
            value = metrics.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                gauge.set(float(value), tags=tags)
    except Exception:  # noqa: BLE001 - live metrics are a view; the trial's results are in result.json
        pass
