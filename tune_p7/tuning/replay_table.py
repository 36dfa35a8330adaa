"""A recorded full grid as the replay reads it: ``Table`` (learning curves per configuration and seed, the seconds
each epoch is charged, the val metrics the gates read), its targets, scale and diagnostics.

A *table* holds every configuration of a finite space trained to its last epoch with one or more seeds (one row per
configuration, seed and epoch: the grid keys, the metric, the epoch's seconds), as bench/record_grid.py writes it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tune_p7.core.gates import Gates, gate

META_KEY = b"tune_p7_grid"
GATE_INPUTS = ("cos_anchor", "cos_next", "cos_prev", "margin")  # the val metrics core.gates.gate reads


def objective(meta: dict) -> tuple[str, str]:
    """(metric, mode) of a recorded table: its metadata's, else its space file's (``meta["space"]``, the text
    bench/record_grid.py keeps), else the search's defaults (margin, max)."""
    import yaml

    space = yaml.safe_load(meta.get("space") or "") or {}
    return meta.get("metric", space.get("metric", "margin")), meta.get("mode", space.get("mode", "max"))


@dataclass
class Table:
    """Learning curves of a full grid: ``curves[config][seed]`` = (metric per epoch, seconds per epoch)."""
    keys: tuple[str, ...]
    metric: str
    mode: str
    curves: dict[tuple, dict[int, tuple[np.ndarray, np.ndarray]]]
    meta: dict = field(default_factory=dict)
    gate_inputs: dict[tuple, dict[int, np.ndarray]] = field(default_factory=dict)  # (epochs, 4): GATE_INPUTS

    @classmethod
    def from_frame(cls, df: pd.DataFrame, keys, metric: str = "margin", mode: str = "max", meta=None) -> "Table":
        keys = tuple(keys)
        # a key's column is config/<key> (Tune's name; the hinge's ``margin`` shares the metric's name) or <key>
        columns = [f"config/{k}" if f"config/{k}" in df else k for k in keys]
        seconds = df["train_seconds"] + (df["eval_seconds"] if "eval_seconds" in df else 0.0)
        df = df.assign(_cost=seconds).sort_values("epoch")
        curves: dict = {}
        gated: dict = {}
        for group, g in df.groupby([*columns, "seed"], sort=False):
            cfg = tuple(v.item() if isinstance(v, np.generic) else v for v in group[:-1])
            curves.setdefault(cfg, {})[int(group[-1])] = (g[metric].to_numpy(float), g["_cost"].to_numpy(float))
            if set(GATE_INPUTS) <= set(g.columns):
                gated.setdefault(cfg, {})[int(group[-1])] = g[list(GATE_INPUTS)].to_numpy(float)
        return cls(keys, metric, mode, curves, dict(meta or {}), gated)

    @classmethod
    def read(cls, path) -> "Table":
        import pyarrow.parquet as pq

        t = pq.read_table(path)
        meta = json.loads((t.schema.metadata or {}).get(META_KEY, b"{}"))
        return cls.from_frame(t.to_pandas(), meta["grid_keys"], *objective(meta), meta)

    def with_costs(self, model: dict) -> "Table":
        """This table charging each epoch the seconds of ``model`` (bench/epoch_cost.py: {"keys": the grid keys that
        set an epoch's work, "runs": [{"values": {key: value}, "seconds": per epoch}]}, timed alone) instead of its
        recorded ones (which its file keeps)."""
        at = [self.keys.index(k) for k in model["keys"]]
        cost = {tuple(r["values"][k] for k in model["keys"]): np.asarray(r["seconds"], float) for r in model["runs"]}
        curves = {}
        for cfg, per in self.curves.items():
            seconds = cost.get(tuple(cfg[i] for i in at))
            epochs = max(len(v) for v, _ in per.values())
            if seconds is None or len(seconds) < epochs:
                raise ValueError(f"the cost model has no {epochs} epochs for {dict(zip(self.keys, cfg))}")
            curves[cfg] = {s: (v, seconds[:len(v)]) for s, (v, _) in per.items()}
        return Table(self.keys, self.metric, self.mode, curves, {**self.meta, "seconds": "cost model"},
                     self.gate_inputs)

    def gate(self, cfg: tuple, seed: int, epoch: int, gates: Gates, warmup_epochs: int) -> str | None:
        """The gate the trainable would report at ``epoch`` of this run: tune_p7.core.gates.gate on the epoch's
        recorded val metrics (None where the table does not hold all of GATE_INPUTS)."""
        m = self.gate_inputs.get(cfg, {}).get(seed)
        if m is None:
            return None
        return gate({**dict(zip(GATE_INPUTS, map(float, m[epoch - 1]))), "epoch": epoch}, gates, warmup_epochs)

    @property
    def sign(self) -> float:
        return 1.0 if self.mode == "max" else -1.0

    @property
    def seeds(self) -> list[int]:
        return sorted({s for per in self.curves.values() for s in per})

    def seed_values(self, cfg: tuple) -> np.ndarray:
        """The configuration's value per seed: its best epoch (what checkpoint selection keeps), NaN-safe."""
        return np.array([self.sign * np.nanmax(self.sign * c) if np.isfinite(c).any() else np.nan
                         for c, _ in self.curves[cfg].values()])

    def value(self, cfg: tuple) -> float:
        """The configuration's quality: the mean over seeds of its best epoch's metric."""
        if not hasattr(self, "_values"):  # computed once: a replay asks for it after every epoch
            self._values = {}
        if cfg not in self._values:
            v = self.seed_values(cfg)
            self._values[cfg] = float(np.mean(v)) if np.isfinite(v).all() else -self.sign * math.inf
        return self._values[cfg]

    def best(self) -> tuple[tuple, float, float]:
        """(the best configuration, its value, its own seed noise: the spread of its per-seed values)."""
        if not hasattr(self, "_best"):
            cfg = max(self.curves, key=lambda c: self.sign * self.value(c))
            v = self.seed_values(cfg)
            self._best = cfg, self.value(cfg), float(np.nanmax(v) - np.nanmin(v))
        return self._best

    def regret(self, cfg: tuple) -> float:
        return self.sign * (self.best()[1] - self.value(cfg)) if cfg in self.curves else math.inf

    def targets(self) -> dict[str, float]:
        """Regret tolerances a search must get within, from every configuration's seeds rather than one seed
        difference: ``top_1pct``, the regret of the configuration at the top 1% of the table (at least the best
        one); ``within_se``, one pooled standard error of a configuration's mean, sqrt(s_p^2 / n), s_p^2 the
        within-configuration variance of the per-seed values pooled over the table, n the seeds per configuration
        (NaN with one seed)."""
        regrets = np.sort([r for r in map(self.regret, self.curves) if math.isfinite(r)])
        values = [v for v in map(self.seed_values, self.curves) if np.isfinite(v).all()]
        dof = sum(len(v) - 1 for v in values)
        pooled = sum(float(np.sum((v - v.mean()) ** 2)) for v in values) / dof if dof else math.nan
        seeds = float(np.median([len(v) for v in values])) if values else math.nan
        return {"top_1pct": float(regrets[math.ceil(0.01 * len(regrets)) - 1]) if len(regrets) else math.nan,
                "within_se": math.sqrt(pooled / seeds) if dof else math.nan}

    def diagnostics(self) -> dict[str, Any]:
        """Whether the table can show what multi-fidelity search buys: ``variance_share``, each grid key's share of
        the variance of the configurations' values (its main effect: the sum of squares between the key's levels
        over the total; a key near 0 changes nothing), and ``epoch1_spearman``, the rank correlation of the
        configurations' epoch-1 values (mean over seeds) with their values (1: any early stopping is perfect)."""
        from scipy.stats import spearmanr

        cfgs = [c for c in self.curves if math.isfinite(self.value(c))]
        v = np.array([self.value(c) for c in cfgs])
        total = float(np.sum((v - v.mean()) ** 2))
        share = {}
        for i, key in enumerate(self.keys):
            levels = pd.Series(v).groupby([c[i] for c in cfgs])
            share[key] = float((levels.count() * (levels.mean() - v.mean()) ** 2).sum() / total) if total else 0.0
        first = [np.nanmean([curve[0][0] for curve in self.curves[c].values()]) for c in cfgs]
        return {"variance_share": share, "epoch1_spearman": float(spearmanr(first, v).statistic) if len(v) > 2 else
                math.nan}

    def normalised(self, regret: np.ndarray) -> np.ndarray:
        """Regrets over worst_regret(): 0 the best configuration, 1 the worst; inf stays inf, and a table whose
        configurations are all equal (scale 0) makes every finite regret 0."""
        regret, scale = np.asarray(regret, float), self.worst_regret()
        with np.errstate(invalid="ignore", divide="ignore"):
            out = regret / scale if scale > 0 else np.where(np.isfinite(regret), 0.0, np.inf)
        return np.where(np.isinf(regret), np.inf, out)

    def worst_regret(self) -> float:
        """The largest finite regret of the table: the scale of normalised regret (0 best, 1 the worst)."""
        return max((r for r in map(self.regret, self.curves) if math.isfinite(r)), default=math.nan)
