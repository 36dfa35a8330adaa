"""``search:`` of a search space: how trials are chosen (random, or a model-based searcher of
tune_p7/tuning/searchers.py) and the points it evaluates first."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field, fields, replace
from typing import Any

from tune_p7.core.config import P7Config, check_value
from tune_p7.errors import InputError


def _typed(default, kind, **limits):
    return field(default=default, metadata={"type": kind, **limits})


@dataclass(frozen=True)
class SearchSettings:
    """``search:``, how trials are chosen. ``random``: Tune's BasicVariantGenerator (every grid point, random draws
    for the rest, ``num_samples`` times). The model-based ones (tune_p7/tuning/searchers.py) choose each trial from the
    results so far: grids become choices, ``num_samples`` is the number of trials, ``points_to_evaluate`` run first.
    Each algorithm takes the common keys and its own (ALGORITHM_KEYS)."""
    algorithm: str = _typed("random", str)
    seed: int | None = _typed(None, int, lo=0)
    points_to_evaluate: tuple[dict[str, Any], ...] = _typed((), list)
    # optuna: Optuna's TPESampler (its 5.0 defaults) or GPSampler
    sampler: str = _typed("tpe", str)  # tpe | gp
    n_startup_trials: int = _typed(10, int, lo=0)  # random trials before the model
    multivariate: bool = _typed(True, bool)  # tpe: one joint density over the keys, not one per key
    group: bool = _typed(False, bool)  # tpe: one density per group of keys that always occur together
    constant_liar: bool = _typed(True, bool)  # tpe: running trials count as bad, so parallel workers spread out
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
ALGORITHM_KEYS = {"random": (), "optuna": ("sampler", "n_startup_trials", "multivariate", "group", "constant_liar"),
                  "hyperopt": ("n_initial_points", "gamma"), "bohb": ("reduction_factor", "random_fraction")}
EXTRA_PACKAGES = {"hyperopt": ("hyperopt",), "bohb": ("hpbandster", "ConfigSpace")}  # requirements-search.txt


def read_search(src, raw, params, num_samples) -> SearchSettings:
    """The validated ``search:`` mapping of space file ``src``, against its checked ``params``."""
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
    if settings.sampler not in ("tpe", "gp"):
        raise InputError(src, f"key 'search.sampler': expected tpe or gp, got {settings.sampler!r}")
    if settings.group and not settings.multivariate:
        raise InputError(src, "key 'search.group': needs search.multivariate true (Optuna's rule)")
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
    points = tuple(point(src, i, p, params) for i, p in enumerate(values.get("points_to_evaluate") or []))
    if len(points) > num_samples:
        raise InputError(src, f"key 'num_samples': {num_samples} trials cannot run the {len(points)} "
                              "points_to_evaluate")
    return replace(settings, points_to_evaluate=points)


def point(src, i, point, params) -> dict[str, Any]:
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


# The budget from which the replays found the shipped model-based default ahead of random search + ASHA
# (bench/search_compare.py, bench/README.md "Small budgets", 100 replays per table): share of replays within one
# pooled standard error of the best configuration on four recorded tables, TPE + ASHA / random + ASHA, at 25 trials
# 36/18%, 66/53%, 39/40%, 13/17% (ahead on two tables, not on two); at 50 trials 87/35%, 98/78%, 93/65%, 16/29%.
MEASURED_MIN_TRIALS = 50
STARTUP_KEY = {"optuna": "n_startup_trials", "hyperopt": "n_initial_points"}


def search_warnings(settings: SearchSettings, num_samples: int) -> list[str]:
    """``warning:`` lines for a model-based search given fewer trials than it needs: fewer than its random start-up
    trials (its model never chooses a trial), or fewer than the replays found it needs to beat random + ASHA."""
    if not settings.model_based:
        return []
    out = []
    key = STARTUP_KEY.get(settings.algorithm)
    startup = getattr(settings, key) if key else 0
    if key and num_samples <= startup:
        out.append(f"warning: search.algorithm {settings.algorithm}: its first search.{key} = {startup} trials are "
                   f"random and num_samples is {num_samples}: its model never chooses a trial (use algorithm random)")
    elif num_samples < MEASURED_MIN_TRIALS:
        out.append(f"warning: search.algorithm {settings.algorithm} with num_samples {num_samples}: below "
                   f"{MEASURED_MIN_TRIALS} trials the replays found a model-based search not reliably ahead of random "
                   "search + ASHA at finding the best configuration (at 25 trials ahead on two of four recorded "
                   f"tables, not on two: bench/README.md); the model chooses only {max(num_samples - startup, 0)} "
                   "trials")
    return out
