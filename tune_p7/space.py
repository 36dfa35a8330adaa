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
    # or population-based training (the scheduler then replaces ASHA; see tune_p7/pbt.py):
    # scheduler: {name: pbt | pb2, perturbation_interval: 1, quantile_fraction: 0.25, resample_probability: 0.25,
    #             mutations: {lr: {loguniform: [1.0e-4, 3.0e-3]}, margin: {choice: [0.05, 0.07, 0.10]}}}
    gates: {drift: 0.05, margin: 0.10, grace_epochs: 1, escape: null}
    checkpoints: {num_to_keep: 2}
    resources: {cpus_per_trial: 1}
    confirm: {top: 3, seeds: 5}  # re-run the top 3 configurations with 5 new seeds each (top 0: no confirmation)
    search: {algorithm: optuna, seed: 0, points_to_evaluate: [{lr: 5.0e-4}]}   # see SearchSettings
"""
from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from tune_p7.cli import read_yaml
from tune_p7.config import RULES, P7Config, check_value
from tune_p7.errors import InputError

TOP_KEYS = {"description", "num_samples", "metric", "mode", "params", "runs", "scheduler", "gates", "checkpoints",
            "resources", "confirm", "search"}
SAMPLERS = ("grid", "choice", "uniform", "loguniform")
RUN_KEY = "run"  # the param_space key that holds one explicit run
# Keys a PBT exploit may change mid-run: the loop reads them from the config every step (TrainStep) or sets them on
# the optimizer after loading its state (lr, weight_decay). Architecture, data and batch keys shape the model or
# its inputs and cannot change under a checkpoint.
MUTABLE = ("lr", "weight_decay", "grad_clip", "temperature", "margin", "w_rank", "w_margin", "w_teacher",
           "teacher_floor", "gate_threshold", "gate_weak_weight")
ASHA_KEYS = ("grace_period", "reduction_factor", "brackets")
PBT_KEYS = ("perturbation_interval", "quantile_fraction", "resample_probability", "mutations")
POPULATION = ("pbt", "pb2")


@dataclass(frozen=True)
class SchedulerSettings:
    name: str = "asha"  # asha | fifo | pbt | pb2
    grace_period: int = 2
    reduction_factor: float = 2.0
    brackets: int = 1
    perturbation_interval: int = 2  # pbt/pb2: epochs between exploit/explore steps of a trial
    quantile_fraction: float = 0.25  # pbt/pb2: the bottom fraction copies the top fraction
    resample_probability: float = 0.25  # pbt: draw a mutated key afresh instead of perturbing it
    mutations: dict = field(default_factory=dict)  # pbt/pb2: key -> {uniform|loguniform: [lo, hi]} | {choice: [...]}


@dataclass(frozen=True)
class Gates:
    drift: float = 0.05  # stop when cos_anchor < drift, any epoch
    margin: float = 0.10  # stop when val margin < margin, once warm-up + grace epochs are over
    grace_epochs: int = 1
    escape: float | None = None  # stop when val cos_next and cos_prev are both < escape (orthogonal escape); off


@dataclass(frozen=True)
class ConfirmSettings:
    top: int = 3  # configurations of the ranked summary trained again (0: no confirmation stage)
    seeds: int = 5  # new seeds for each


def _typed(default, kind, **limits):
    return field(default=default, metadata={"type": kind, **limits})


@dataclass(frozen=True)
class SearchSettings:
    """``search:``, how trials are chosen. ``random``: Tune's BasicVariantGenerator (every grid point, random draws
    for the rest, ``num_samples`` times). The model-based ones (tune_p7/searchers.py) choose each trial from the
    results so far: grids become choices, ``num_samples`` is the number of trials, ``points_to_evaluate`` run first.
    Each algorithm takes the common keys and its own (ALGORITHM_KEYS)."""
    algorithm: str = _typed("random", str)
    seed: int | None = _typed(None, int, lo=0)
    points_to_evaluate: tuple[dict[str, Any], ...] = _typed((), list)
    # optuna: Optuna's TPESampler (its defaults)
    n_startup_trials: int = _typed(10, int, lo=0)  # random trials before TPE's model
    multivariate: bool = _typed(True, bool)  # one joint density over the keys, not one per key
    # hyperopt: HyperOpt's TPE (Ray's HyperOptSearch defaults)
    n_initial_points: int = _typed(20, int, lo=0)
    gamma: float = _typed(0.25, float, lo=0.0, hi=1.0)  # fraction of trials in the "good" density
    # bohb: hpbandster's BOHB under Ray's HyperBandForBOHB; budgets are epochs, up to params.epochs
    reduction_factor: float = _typed(3.0, float, lo=1.0)  # keep 1/reduction_factor of a rung's trials
    random_fraction: float = _typed(1 / 3, float, lo=0.0, hi=1.0)  # suggestions drawn at random, not by the model

    @property
    def model_based(self) -> bool:
        return self.algorithm != "random"


COMMON_SEARCH_KEYS = ("algorithm", "seed", "points_to_evaluate")
ALGORITHM_KEYS = {"random": (), "optuna": ("n_startup_trials", "multivariate"),
                  "hyperopt": ("n_initial_points", "gamma"), "bohb": ("reduction_factor", "random_fraction")}
EXTRA_PACKAGES = {"hyperopt": ("hyperopt",), "bohb": ("hpbandster", "ConfigSpace")}  # requirements-search.txt


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

    def override(self, epochs: int | None = None, seed: int | None = None, scheduler: str | None = None) -> "Space":
        """The same space with the CLI's --epochs / --seed / --scheduler applied, checked again against the
        scheduler (a flag can make a valid file unrunnable: it is named then)."""
        if scheduler and self.search.algorithm == "bohb":
            raise InputError("--scheduler " + scheduler, f"{self.source} searches with bohb, which runs under its "
                                                         "own scheduler (HyperBandForBOHB)")
        fixed = {k: v for k, v in (("epochs", epochs), ("seed", seed)) if v is not None}
        runs = [{k: v for k, v in r.items() if k not in fixed} for r in self.runs]
        points = tuple({k: v for k, v in p.items() if k not in fixed} for p in self.search.points_to_evaluate)
        sched = dataclasses.replace(self.scheduler, name=scheduler or self.scheduler.name)
        space = dataclasses.replace(self, params={**self.params, **fixed}, runs=runs, scheduler=sched,
                                    search=replace(self.search, points_to_evaluate=points))
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
    flat = {k: v for k, v in config.items() if k != RUN_KEY}
    flat.update(config.get(RUN_KEY) or {})
    return flat


def _section(src, raw, name, cls):
    values = raw.get(name) or {}
    if not isinstance(values, dict):
        raise InputError(src, f"'{name}' must be a mapping")
    known = {f.name: f for f in fields(cls)}
    out = {}
    for key, value in values.items():
        if key not in known:
            raise InputError(src, f"unknown key '{name}.{key}' (known: {', '.join(known)})")
        optional = known[key].default is None  # an optional number: null turns it off
        kind = float if optional else type(known[key].default)
        ok = isinstance(value, kind) or (kind is float and isinstance(value, int)) or (optional and value is None)
        if not ok or isinstance(value, bool):
            expected = "a number or null" if optional else kind.__name__
            raise InputError(src, f"key '{name}.{key}': expected {expected}, got {value!r}")
        out[key] = value
    return cls(**out)


def _param(src, key, value, section="params", samplers=SAMPLERS):
    f = {f.name: f for f in fields(P7Config)}.get(key)
    if f is None:
        raise InputError(src, f"unknown key '{section}.{key}' (not a config key)")
    if not isinstance(value, dict):
        return check_value(f, value, src)
    if len(value) != 1 or next(iter(value)) not in samplers:
        raise InputError(src, f"key '{section}.{key}': a sampler is one of {{{', '.join(samplers)}: ...}}, "
                              f"got {value!r}")
    (kind, arg), = value.items()
    if not isinstance(arg, list) or not arg:
        raise InputError(src, f"key '{section}.{key}': {kind} needs a non-empty list, got {arg!r}")
    checked = [check_value(f, v, f"{src}: {section}.{key}") for v in arg]
    if kind in ("uniform", "loguniform"):
        if len(arg) != 2 or not isinstance(f.default, float) or not checked[0] < checked[1]:
            raise InputError(src, f"key '{section}.{key}': {kind} needs [low, high] with low < high on a float key")
        if kind == "loguniform" and checked[0] <= 0:
            raise InputError(src, f"key '{section}.{key}': loguniform needs low > 0")
    return {kind: checked}


def _scheduler(src, raw) -> SchedulerSettings:
    values = raw.get("scheduler") or {}
    if not isinstance(values, dict):
        raise InputError(src, "'scheduler' must be a mapping")
    name = values.get("name", "asha")
    if name not in ("asha", "fifo", *POPULATION):
        raise InputError(src, f"key 'scheduler.name': expected asha, fifo, pbt or pb2, got {name!r}")
    own = {"asha": ASHA_KEYS, "fifo": ASHA_KEYS, "pbt": PBT_KEYS, "pb2": tuple(k for k in PBT_KEYS if k != "resample_probability")}[name]
    alien = [k for k in values if k in ASHA_KEYS + PBT_KEYS and k not in own]
    if alien:
        raise InputError(src, f"key 'scheduler.{alien[0]}' does not apply to scheduler {name}")
    sched = _section(src, {"scheduler": {k: v for k, v in values.items() if k != "mutations"}}, "scheduler",
                     SchedulerSettings)
    if sched.grace_period < 1 or sched.reduction_factor <= 1 or sched.brackets < 1:
        raise InputError(src, "key 'scheduler': needs grace_period >= 1, reduction_factor > 1, brackets >= 1")
    if name not in POPULATION:
        return sched
    if sched.perturbation_interval < 1 or not 0 < sched.quantile_fraction <= 0.5 \
            or not 0 <= sched.resample_probability <= 1:
        raise InputError(src, "key 'scheduler': needs perturbation_interval >= 1, 0 < quantile_fraction <= 0.5, "
                              "0 <= resample_probability <= 1")
    if name == "pb2" and importlib.util.find_spec("sklearn") is None:
        raise InputError(src, "scheduler pb2 needs scikit-learn: pip install -r requirements-search.txt")
    raw_mut = values.get("mutations")
    if not isinstance(raw_mut, dict) or not raw_mut:
        raise InputError(src, f"key 'scheduler.mutations': {name} needs a mapping of keys to mutate, "
                              "e.g. {lr: {loguniform: [1.0e-4, 3.0e-3]}}")
    kinds = ("uniform", "loguniform") if name == "pb2" else ("uniform", "loguniform", "choice")
    mutations = {}
    for key, spec in raw_mut.items():
        if key in P7Config.keys() and key not in MUTABLE:
            raise InputError(src, f"key 'scheduler.mutations.{key}': {key} cannot change mid-run "
                                  f"(mutable: {', '.join(MUTABLE)})")
        if not isinstance(spec, dict) and key in MUTABLE:
            raise InputError(src, f"key 'scheduler.mutations.{key}': expected {{{' | '.join(kinds)}: [...]}}, "
                                  f"got {spec!r}")
        if name == "pb2" and isinstance(spec, dict) and "choice" in spec:
            raise InputError(src, f"key 'scheduler.mutations.{key}': pb2 takes continuous bounds only "
                                  "({uniform: [lo, hi]} or {loguniform: [lo, hi]})")
        (kind, arg), = _param(src, key, spec, "scheduler.mutations", kinds).items()
        mutations[key] = {kind: sorted(arg) if kind == "choice" else arg}  # PBT shifts a choice to a neighbour
    return SchedulerSettings(**{**{f.name: getattr(sched, f.name) for f in fields(sched)}, "mutations": mutations})


def _check_mutations(space: "Space") -> None:
    """The start values of every mutated key (params) lie in its mutation's range; no run sets one; a population
    of >= 2 trials; perturbations happen before the last epoch; checkpoints live long enough to be exploited."""
    sched, src = space.scheduler, space.source
    for key, spec in sched.mutations.items():
        (kind, arg), = spec.items()
        for i, run in enumerate(space.runs):
            if key in run:
                raise InputError(src, f"runs[{i}]: key '{key}' is mutated by the scheduler: give its start values "
                                      "in params")
        if key in space.params:
            starts = space.values_of(key)
            inside = all(v in arg for v in starts) if kind == "choice" else all(arg[0] <= v <= arg[1] for v in starts)
            if not inside:
                raise InputError(src, f"key 'params.{key}': start values {starts} are outside "
                                      f"scheduler.mutations.{key} ({kind} {arg})")
    grids = [len(v["grid"]) for v in space.params.values() if isinstance(v, dict) and "grid" in v]
    population = space.num_samples * math.prod(grids) * max(1, len(space.runs))
    if population < 2:
        raise InputError(src, f"scheduler {sched.name} needs a population of >= 2 trials (num_samples x grid "
                              f"points x runs), got {population}")
    epochs = min(space.values_of("epochs"))
    if sched.perturbation_interval >= epochs:
        raise InputError(src, f"key 'scheduler.perturbation_interval': {sched.perturbation_interval} >= epochs "
                              f"({epochs}): no trial would ever be perturbed")
    if space.num_to_keep < 3:
        raise InputError(src, f"key 'checkpoints.num_to_keep': {sched.name} needs >= 3 (Tune deletes a checkpoint "
                              "beyond it, and a checkpoint another trial is about to exploit must still exist)")


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
    params = {k: _param(src, k, v) for k, v in params_raw.items()}
    runs_raw = raw.get("runs") or []
    if not isinstance(runs_raw, list) or not all(isinstance(r, dict) for r in runs_raw):
        raise InputError(src, "'runs' must be a list of mappings")
    if "runs" in raw and not runs_raw:
        raise InputError(src, "'runs' is empty")
    runs = []
    for i, r in enumerate(runs_raw):
        runs.append({k: _param(f"{src}: runs[{i}]", k, v) for k, v in r.items()})
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
    if mode not in ("max", "min"):
        raise InputError(src, f"key 'mode': expected max or min, got {mode!r}")
    sched = _scheduler(src, raw)
    gates = _section(src, raw, "gates", Gates)
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
    confirm = _section(src, raw, "confirm", ConfirmSettings)
    for key, low in (("top", 0), ("seeds", 1)):
        if getattr(confirm, key) < low:
            raise InputError(src, f"key 'confirm.{key}': expected an integer >= {low}, got {getattr(confirm, key)!r}")
    search = _search(src, raw, params, num_samples)
    space = Space(src, params, runs, num_samples, metric, mode, str(raw.get("description", "")), sched, gates, keep,
                  float(cpus), confirm, search)
    _check_combinations(space)
    space.check_scheduler()
    if sched.name in POPULATION:
        _check_mutations(space)
    if sched.name in POPULATION and search.model_based:
        raise InputError(src, f"keys 'scheduler.name' {sched.name} and 'search.algorithm' {search.algorithm}: "
                              "population-based training chooses its own configurations and takes no searcher")
    return space


def _search(src, raw, params, num_samples) -> SearchSettings:
    values = raw.get("search") or {}
    if not isinstance(values, dict):
        raise InputError(src, "'search' must be a mapping")
    algorithm = values.get("algorithm", "random")
    if algorithm not in ALGORITHM_KEYS:
        raise InputError(src, f"key 'search.algorithm': expected one of {', '.join(ALGORITHM_KEYS)}, got {algorithm!r}")
    known = {f.name: f for f in fields(SearchSettings)}
    allowed = COMMON_SEARCH_KEYS + ALGORITHM_KEYS[algorithm]
    for key, value in values.items():
        if key not in allowed:
            owner = next((a for a, keys in ALGORITHM_KEYS.items() if key in keys), None)
            why = f"a setting of {owner}, not of {algorithm}" if owner else "unknown key"
            raise InputError(src, f"key 'search.{key}': {why} (known: {', '.join(allowed)})")
        m = known[key].metadata
        kind = m["type"]
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        ok = ok or (kind is float and isinstance(value, int) and not isinstance(value, bool))
        if not ok or (m.get("lo") is not None and value < m["lo"]) or (m.get("hi") is not None and value > m["hi"]):
            limits = "".join(f", {w} {m[k]}" for k, w in (("lo", ">="), ("hi", "<=")) if m.get(k) is not None)
            raise InputError(src, f"key 'search.{key}': expected {kind.__name__}{limits}, got {value!r}")
    settings = SearchSettings(**{k: v for k, v in values.items() if k != "points_to_evaluate"})
    if settings.reduction_factor <= 1:
        raise InputError(src, "key 'search.reduction_factor': must be > 1")
    if not settings.model_based:
        if "points_to_evaluate" in values:
            raise InputError(src, "key 'search.points_to_evaluate': needs a model-based search.algorithm "
                                  f"({', '.join(a for a in ALGORITHM_KEYS if a != 'random')}); under random, list "
                                  "fixed points as runs")
        return settings
    if raw.get("runs"):
        raise InputError(src, f"key 'runs': explicit runs are grid points, which search.algorithm {algorithm} does "
                              "not take: give ranges in params and fixed points as search.points_to_evaluate")
    if algorithm == "bohb":
        if "scheduler" in raw:
            raise InputError(src, "key 'scheduler': bohb runs under its own scheduler (Ray's HyperBandForBOHB): "
                                  "set search.reduction_factor instead")
        if isinstance(params.get("epochs"), dict):
            raise InputError(src, "key 'params.epochs': bohb's budget is the epochs: give one value (the largest)")
    missing = [p for p in EXTRA_PACKAGES.get(algorithm, ()) if importlib.util.find_spec(p) is None]
    if missing:
        raise InputError(src, f"search.algorithm {algorithm} needs {' and '.join(missing)}: "
                              "pip install -r requirements-search.txt")
    points = tuple(_point(src, i, p, params) for i, p in enumerate(values.get("points_to_evaluate") or []))
    if len(points) > num_samples:
        raise InputError(src, f"key 'num_samples': {num_samples} trials cannot run the {len(points)} "
                              "points_to_evaluate")
    return replace(settings, points_to_evaluate=points)


def _point(src, i, point, params) -> dict[str, Any]:
    """One of search.points_to_evaluate: a value inside each sampled key's domain; keys it leaves out take their
    P7Config default, which must be inside the domain too (so ``{}`` is the defaults)."""
    where = f"search.points_to_evaluate[{i}]"
    if not isinstance(point, dict):
        raise InputError(src, f"{where}: expected a mapping of config keys, got {point!r}")
    sampled = {k: next(iter(v.items())) for k, v in params.items() if isinstance(v, dict)}
    config_fields = {f.name: f for f in fields(P7Config)}
    out = {}
    for key in point:
        if key not in config_fields:
            raise InputError(src, f"{where}: unknown key '{key}' (not a config key)")
        if key not in sampled:
            raise InputError(src, f"{where}: key '{key}' is not sampled in params (only sampled keys take a point)")
    for key, (kind, arg) in sampled.items():
        value = check_value(config_fields[key], point[key], f"{src}: {where}") if key in point \
            else getattr(P7Config(), key)
        inside = value in arg if kind in ("grid", "choice") else arg[0] <= value <= arg[1]
        if not inside:
            given = "" if key in point else " (its default; give a value)"
            raise InputError(src, f"{where}: key '{key}': {value!r}{given} is outside params.{key} {kind} {arg}")
        out[key] = value
    fixed = {k: v for k, v in params.items() if not isinstance(v, dict)}
    P7Config.from_dict({**fixed, **out}, source=f"{src}: {where}")
    return out


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
