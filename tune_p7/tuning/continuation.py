"""A finished search continued: ``search.py --continue EXP --num-samples N`` runs N more trials of EXP's space on
EXP's data as a new experiment that records ``continues: EXP``, and whose searcher starts from every trial of EXP
(and of the searches EXP itself continued: the chain).

What each searcher is told of the earlier trials:

- **optuna**: each earlier trial is added to the new study (``Study.add_trial``) in the state this project's
  searcher tells Optuna a trial of its own (tune_p7/tuning/searchers.py): COMPLETE with its best epoch's value
  when it ran its full epochs, PRUNED with its per-epoch values at step = epoch when ASHA or a gate stopped it,
  FAIL when it errored; TPE then fits on them before its first suggestion (its random start-up counts them too);
- **hyperopt**: each earlier trial is added to HyperOpt's ``Trials`` as done, with its loss when it ran its full
  epochs and without one (HyperOpt's "fail": ranked below every finished trial) when it was stopped;
- **random**: nothing is learned, but no configuration is repeated: N new configurations are drawn with Tune's
  own ``generate_variants`` from the space, every one already run is skipped, and the rest run as Tune's
  ``BasicVariantGenerator``'s ``points_to_evaluate``.

BOHB (whose model is per budget, fed by its own HyperBand's rungs) and PBT / PB2 (a population, not independent
trials) are not continued. The summary of a continued search ranks the trials of the whole chain (one table;
earlier trials keep their folders, reached as ``../EXP/trial``), and so does its confirmation.
"""
from __future__ import annotations

import json
import math
import posixpath

import numpy as np

from tune_p7.errors import InputError
from tune_p7.experiment import Experiment
from tune_p7.space.file import Space

MAX_DRAWS = 20  # draws of the whole space per new random configuration before the space counts as exhausted


def record_of(exp: str) -> dict:
    """The search record of ``exp``; {} for a Tune experiment without one."""
    return Experiment(exp).record() or {}


def chain(exp: str) -> list[str]:
    """``exp`` and the experiments it continues, newest first."""
    out = [exp]
    while True:
        before = record_of(out[-1]).get("continues")
        if not before or before in out:
            return out
        out.append(before)


def chain_trials(exp: str) -> list[tuple[str, object]]:
    """(experiment path, Tune trial) of every trial of ``exp``'s chain, ``exp``'s first."""
    from ray.tune import ExperimentAnalysis

    return [(path, t) for path in chain(exp) for t in ExperimentAnalysis(path).trials]


def relative_dir(exp: str, path: str, trial_dir: str) -> str:
    """The folder of a trial of experiment ``path`` as seen from experiment ``exp`` (``../OTHER/trial``)."""
    if path == exp:
        return trial_dir
    strip = (lambda p: p.split("://", 1)[-1])
    return posixpath.join(posixpath.relpath(strip(path), strip(exp)), trial_dir)


def check_space(space: Space, flag: str) -> None:
    """Refuse a space whose searcher cannot be told earlier trials."""
    if space.search.algorithm == "bohb" or space.scheduler.name in ("pbt", "pb2"):
        what = "bohb" if space.search.algorithm == "bohb" else space.scheduler.name
        raise InputError(flag, f"a {what} search cannot be continued (its model is fed by its own scheduler's rungs "
                               "or population): start a new search")


def prior_trials(exp: str) -> list[dict]:
    """Every trial of ``exp``'s chain as {trial_id, config, results (every epoch), error}."""
    out = []
    for path, t in chain_trials(exp):
        results = Experiment(path).trial_results(t.storage.trial_dir_name)
        out.append({"trial_id": t.trial_id, "config": t.config, "results": results,
                    "error": t.status == "ERROR" or bool(results and results[-1].get("error"))})
    return out


def best_value(results: list[dict], metric: str, mode: str) -> float | None:
    """The best finite ``metric`` of a trial's epochs in ``mode``; None when it has none."""
    values = [r[metric] for r in results if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])]
    return (max(values) if mode == "max" else min(values)) if values else None


def _key(config: dict, keys) -> str:
    return json.dumps({k: config.get(k) for k in sorted(keys)}, sort_keys=True, default=str)


def fresh_configs(param_space: dict, prior: list[dict], n: int, seed: int | None) -> list[dict]:
    """``n`` configurations of ``param_space`` drawn by Tune's own variant generator, none equal to an earlier
    trial's or to another (on every key of the space); an InputError when the space has fewer left."""
    from ray.tune.search.variant_generator import generate_variants

    rng = np.random.default_rng(seed)
    seen = {_key(p["config"], param_space) for p in prior}
    out = []
    for _ in range(MAX_DRAWS * n):
        for _, config in generate_variants(param_space, random_state=int(rng.integers(2 ** 31))):
            key = _key(config, param_space)
            if key not in seen:
                seen.add(key)
                out.append(config)
            if len(out) == n:
                return out
    raise InputError("--num-samples", f"the space has only {len(out)} configurations not run yet, not {n}")


def random_searcher(space: Space, prior: list[dict]):
    """Tune's BasicVariantGenerator running ``space.num_samples`` configurations none of ``prior`` ran."""
    from ray.tune.search import BasicVariantGenerator

    seed = None if space.search.seed is None else space.search.seed + len(prior)
    return BasicVariantGenerator(points_to_evaluate=fresh_configs(space.param_space(), prior, space.num_samples,
                                                                  seed), random_state=seed)
