"""Search spaces are data: a YAML file in ``search_spaces/`` read into a validated ``Space``.

    description: free text
    num_samples: 1            # repeats of every grid point (random draws for choice/uniform/loguniform)
    metric: margin            # what ASHA and checkpoint retention rank by
    mode: max
    params:                   # any P7Config key: a value, or one of
      epochs: 6
      context_length: {grid: [3, 5, 7]}           #   every value (product with the other grids)
      arch: {choice: [transformer, lstm]}         #   one at random per sample
      lr: {loguniform: [1.0e-4, 2.0e-3]}          #   uniform / loguniform over [low, high]
    runs:                     # explicit points, each a mapping of keys (tried in turn, times the grids)
      - {context_length: 5, margin: 0.07}
    scheduler: {name: asha, grace_period: 2, reduction_factor: 2, brackets: 1}
    # or population-based training (the scheduler then replaces ASHA; see tune_p7/tuning/pbt.py):
    # scheduler: {name: pbt | pb2, perturbation_interval: 1, quantile_fraction: 0.25, resample_probability: 0.25,
    #             mutations: {lr: {loguniform: [1.0e-4, 3.0e-3]}, margin: {choice: [0.05, 0.07, 0.10]}}}
    gates: {drift: 0.05, margin: 0.10, grace_epochs: 1, escape: null}
    checkpoints: {num_to_keep: 2}
    resources: {cpus_per_trial: 1}
    confirm: {top: 3, seeds: 3, folds: 2}  # re-run the top 3 configurations, 3 new seeds in each of 2 cross-fitting
    #                                        folds of the train and held-out articles (top 0: no confirmation)
    search: {algorithm: optuna, seed: 0, points_to_evaluate: [{lr: 5.0e-4}]}   # see SearchSettings
    tracking: {backend: mlflow}  # log the search to MLflow too (see TrackingSettings)
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tune_p7.cli import read_yaml
from tune_p7.core.config import RULES, P7Config
from tune_p7.core.gates import Gates
from tune_p7.core.verdicts import RANKABLE
from tune_p7.errors import InputError
from tune_p7.space.scheduler_settings import POPULATION, SchedulerSettings, check_mutations, read_scheduler
from tune_p7.space.search_settings import SearchSettings, read_search
from tune_p7.space.tracking_settings import TrackingSettings, read_tracking
from tune_p7.space.values import param, section

TOP_KEYS = {"description", "num_samples", "metric", "mode", "params", "runs", "scheduler", "gates", "checkpoints",
            "resources", "confirm", "search", "tracking"}
RUN_KEY = "run"  # the param_space key that holds one explicit run
SCHEDULE_KEY = "schedule"  # a run's hyperparameter schedule, [[first epoch, {key: value}], ...] (a PBT trial's, followed by its confirmation)
CROSSFIT_KEY = "crossfit"  # a confirmation run's fold: {fold, folds, seed, common_context} (data/folds.py)


@dataclass(frozen=True)
class ConfirmSettings:
    top: int = 3  # configurations of the ranked summary trained again (0: no confirmation stage)
    seeds: int = 3  # new seeds for each cross-fitting fold
    folds: int = 2  # cross-fitting folds of the train and held-out articles: each fold's runs train without it


@dataclass(frozen=True)
class Space:
    source: str
    params: dict[str, Any]
    runs: list[dict[str, Any]]
    num_samples: int = 1
    metric: str = "margin"
    mode: str = "max"
    description: str = ""
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    gates: Gates = field(default_factory=Gates)
    num_to_keep: int = 2
    cpus_per_trial: float = 1.0
    confirm: ConfirmSettings = field(default_factory=ConfirmSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)

    def param_space(self) -> dict[str, Any]:
        """The Ray Tune param_space: samplers become tune.grid_search / choice / uniform / loguniform (a grid is a
        choice under a model-based search: those searchers take no grids)."""
        from ray import tune

        make = {"grid": tune.choice if self.search.model_based else tune.grid_search, "choice": tune.choice,
                "uniform": lambda v: tune.uniform(*v), "loguniform": lambda v: tune.loguniform(*v)}
        out = {}
        for key, value in {**self.scheduler.mutations, **self.params}.items():  # a mutation's range: first values
            if isinstance(value, dict):
                (kind, arg), = value.items()
                out[key] = make[kind](arg)
            else:
                out[key] = value
        if self.runs:
            out[RUN_KEY] = tune.grid_search(self.runs)
        return out

    def run_values(self, run: dict[str, Any], key: str) -> list[Any]:
        """Every value ``key`` can take in explicit run ``run`` (ranges: their two ends)."""
        if key in run:
            return [run[key]]
        v = self.params.get(key, getattr(P7Config(), key))
        return list(next(iter(v.values()))) if isinstance(v, dict) else [v]

    def values_of(self, key: str) -> list[Any]:
        """Every value ``key`` can take in this space (ranges: their two ends), once per explicit run."""
        return [v for run in self.runs or [{}] for v in self.run_values(run, key)]

    def override(self, epochs: int | None = None, seed: int | None = None, scheduler: str | None = None,
                 num_samples: int | None = None) -> "Space":
        """The same space with the CLI's --epochs / --seed / --scheduler / --num-samples applied, checked again
        against the scheduler (a flag can make a valid file unrunnable: it is named then)."""
        if num_samples is not None and num_samples < len(self.search.points_to_evaluate):
            raise InputError(f"--num-samples {num_samples}", f"{self.source} has {len(self.search.points_to_evaluate)}"
                                                             " search.points_to_evaluate to run")
        if scheduler and self.search.algorithm == "bohb":
            raise InputError("--scheduler " + scheduler, f"{self.source} searches with bohb, which runs under its "
                                                         "own scheduler (HyperBandForBOHB)")
        fixed = {k: v for k, v in (("epochs", epochs), ("seed", seed)) if v is not None}
        runs = [{k: v for k, v in r.items() if k not in fixed} for r in self.runs]
        points = tuple({k: v for k, v in p.items() if k not in fixed} for p in self.search.points_to_evaluate)
        sched = dataclasses.replace(self.scheduler, name=scheduler or self.scheduler.name)
        space = dataclasses.replace(self, params={**self.params, **fixed}, runs=runs, scheduler=sched,
                                    search=replace(self.search, points_to_evaluate=points),
                                    num_samples=num_samples or self.num_samples)
        flags = " ".join(f"--{k} {v}" for k, v in (("epochs", epochs), ("scheduler", scheduler)) if v is not None)
        space.check_scheduler(f" (with {flags})" if flags else "")
        return space

    def with_precision(self, used: str) -> "Space":
        """The same space with every precision 'auto' (the default included) replaced by ``used``."""
        def fix(v):
            return used if v == "auto" else v

        p = self.params.get("precision", "auto")
        p = {k: list(dict.fromkeys(map(fix, v))) for k, v in p.items()} if isinstance(p, dict) else fix(p)
        runs = [{**r, "precision": fix(r["precision"])} if "precision" in r else r for r in self.runs]
        return dataclasses.replace(self, params={**self.params, "precision": p}, runs=runs)

    def check_scheduler(self, flags: str = "") -> None:
        """Refuse what Ray's ASHAScheduler asserts on against the space: grace_period <= max_t (the longest trial's
        epochs). Its other asserts (grace_period >= 1, reduction_factor > 1, brackets >= 1) are load_space's."""
        s, max_t = self.scheduler, max(self.values_of("epochs"))
        if s.name == "asha" and s.grace_period > max_t:
            raise InputError(self.source, f"keys 'scheduler.grace_period' {s.grace_period} and 'epochs' {max_t}"
                                          f"{flags}: ASHA needs grace_period <= the longest trial's epochs")


def trial_config(config: dict[str, Any]) -> dict[str, Any]:
    """A Tune trial's config as flat P7Config keys (an explicit run's keys merged in)."""
    flat = {k: v for k, v in config.items() if k not in (RUN_KEY, CROSSFIT_KEY)}
    flat.update(config.get(RUN_KEY) or {})
    flat.pop(SCHEDULE_KEY, None)
    return flat


def trial_schedule(config: dict[str, Any]) -> list[tuple[int, dict[str, Any]]] | None:
    """The hyperparameter schedule of a Tune trial's config (an explicit run's ``schedule``), or None."""
    raw = (config.get(RUN_KEY) or {}).get(SCHEDULE_KEY) or config.get(SCHEDULE_KEY)
    return [(int(first), dict(changes)) for first, changes in raw] if raw else None


def load_space(path) -> Space:
    """Read and validate a search-space file; every problem raises InputError naming the file and the key."""
    src = str(path)
    if not Path(path).is_file():
        raise InputError(src, "no such search-space file")
    raw = read_yaml(path)
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise InputError(src, f"unknown key '{sorted(unknown)[0]}' (known: {', '.join(sorted(TOP_KEYS))})")
    params_raw = raw.get("params") or {}
    if not isinstance(params_raw, dict):
        raise InputError(src, "'params' must be a mapping of config keys")
    params = {k: param(src, k, v) for k, v in params_raw.items()}
    runs_raw = raw.get("runs") or []
    if not isinstance(runs_raw, list) or not all(isinstance(r, dict) for r in runs_raw):
        raise InputError(src, "'runs' must be a list of mappings")
    if "runs" in raw and not runs_raw:
        raise InputError(src, "'runs' is empty")
    runs = []
    for i, r in enumerate(runs_raw):
        runs.append({k: param(f"{src}: runs[{i}]", k, v) for k, v in r.items()})
        if any(isinstance(v, dict) for v in runs[-1].values()):
            raise InputError(src, f"runs[{i}]: a run holds plain values, not samplers")
        clash = set(r) & {k for k, v in params.items() if isinstance(v, dict)}
        if clash:
            raise InputError(src, f"runs[{i}]: key '{sorted(clash)[0]}' is also sampled in params")
    num_samples = raw.get("num_samples", 1)
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise InputError(src, f"key 'num_samples': expected an integer >= 1, got {num_samples!r}")
    metric, mode = raw.get("metric", "margin"), raw.get("mode", "max")
    if not isinstance(metric, str):
        raise InputError(src, f"key 'metric': expected a string, got {metric!r}")
    if metric not in RANKABLE:
        raise InputError(src, f"key 'metric': {metric!r} is not a metric every trial reports (one of: "
                              f"{', '.join(RANKABLE)})")
    if mode not in ("max", "min"):
        raise InputError(src, f"key 'mode': expected max or min, got {mode!r}")
    sched = read_scheduler(src, raw)
    gates = section(src, raw, "gates", Gates)
    thresholds = [gates.drift, gates.margin] + ([] if gates.escape is None else [gates.escape])
    if gates.grace_epochs < 0 or not all(math.isfinite(t) for t in thresholds):
        raise InputError(src, "key 'gates': needs finite thresholds and grace_epochs >= 0")
    ckpt = raw.get("checkpoints") or {}
    unknown = set(ckpt) - {"num_to_keep"}
    if unknown:
        raise InputError(src, f"unknown key 'checkpoints.{sorted(unknown)[0]}' (known: num_to_keep)")
    keep = ckpt.get("num_to_keep", 2)
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise InputError(src, f"key 'checkpoints.num_to_keep': expected an integer >= 1, got {keep!r}")
    res = raw.get("resources") or {}
    unknown = set(res) - {"cpus_per_trial"}
    if unknown:
        raise InputError(src, f"unknown key 'resources.{sorted(unknown)[0]}' (known: cpus_per_trial)")
    cpus = res.get("cpus_per_trial", 1)
    if not isinstance(cpus, (int, float)) or isinstance(cpus, bool) or cpus <= 0:
        raise InputError(src, f"key 'resources.cpus_per_trial': expected a number > 0, got {cpus!r}")
    confirm = section(src, raw, "confirm", ConfirmSettings)
    for key, low in (("top", 0), ("seeds", 1), ("folds", 2)):
        if getattr(confirm, key) < low:
            raise InputError(src, f"key 'confirm.{key}': expected an integer >= {low}, got {getattr(confirm, key)!r}")
    search = read_search(src, raw, params, num_samples)
    space = Space(src, params, runs, num_samples, metric, mode, str(raw.get("description", "")), sched, gates, keep,
                  float(cpus), confirm, search, read_tracking(src, raw))
    _check_combinations(space)
    space.check_scheduler()
    if sched.name in POPULATION:
        check_mutations(space)
    if sched.name in POPULATION and search.model_based:
        raise InputError(src, f"keys 'scheduler.name' {sched.name} and 'search.algorithm' {search.algorithm}: "
                              "population-based training chooses its own configurations and takes no searcher")
    return space


def _check_combinations(space: Space) -> None:
    """Every configuration the space can produce is valid. Each value of each key (every grid and choice value,
    both ends of each range, every run's) was checked alone; here, per explicit run, every combination of the
    values of the keys a cross-key rule reads (config.RULES). Ranges are float keys, on which the rules are linear
    (convex), so their two ends decide."""
    for i, run in enumerate(space.runs or [{}]):
        src = space.source + (f": runs[{i}]" if space.runs else "")
        for keys, _rule in RULES:
            for values in itertools.product(*(space.run_values(run, k) for k in keys)):
                P7Config.from_dict(dict(zip(keys, values)), source=src)
