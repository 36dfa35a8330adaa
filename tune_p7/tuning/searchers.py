"""The space file's model-based ``search:`` algorithm as a Ray Tune searcher (and BOHB's scheduler), on Ray's own
classes. A random search needs none of them (tune_p7.tuning.algorithms.search_algorithm).

What a searcher learns from a trial that did not run its full epochs. Tune tells a searcher that a trial ended
with ``on_trial_complete(trial_id, result=last_result)`` whether the trial finished, was stopped by ASHA or
tripped a gate, so a model fitted on those values takes an epoch-2 margin for a final one. Here:

- **optuna** (``PruningOptunaSearch``): every epoch's metric is reported to the Optuna trial as an intermediate
  value at step = epoch (``Trial.report``). A trial that reached its ``epochs`` without a gate is told COMPLETE
  with its best epoch's value (the summary ranks by the best val margin, so that is what the model learns); a trial stopped earlier (ASHA, a gate; a gate at the last epoch too) is told PRUNED:
  Optuna keeps its value at the epoch it reached, and TPE ranks pruned trials below every complete one, ordered
  by the epoch they reached, then by that value (optuna.samplers._tpe.sampler._split_pruned_trials). A trial
  whose loss became NaN is FAIL.
- **hyperopt** (``PruningHyperOptSearch``): HyperOpt has no pruned state and no intermediate values. A stopped
  trial is told as done with status ``fail`` and no loss; HyperOpt's TPE takes a trial without a loss as
  infinitely bad (hyperopt.tpe.suggest), i.e. ranked below every finished trial, never with its partial value; a
  finished trial is told its best epoch's value.
- **bohb** (Ray's ``TuneBOHB`` under ``GatedHyperBandForBOHB``): BOHB's model is per budget. HyperBandForBOHB
  marks the result at each rung (budget = epochs so far) and TuneBOHB hands exactly those to hpbandster, which
  fits one density per budget and samples from the largest budget with enough results: an epoch-2 result is
  only ever compared with other epoch-2 results. The completion call carries nothing (TuneBOHB ignores it), so a
  trial a gate stops between rungs is known to BOHB only by the rungs it passed.
- **random** (not this module's: ``algorithms.search_algorithm``): Tune's BasicVariantGenerator; nothing is learned.

Resume: Tune saves the searcher's state (``searcher-state-*.pkl``: the Optuna study, HyperOpt's trials, BOHB's
observations) and its wrappers' (``search_gen_state-*.json``: trials suggested so far, ConcurrencyLimiter's running
trials) with its experiment state, and ``Tuner.restore`` restores them together, so a resumed search neither
suggests a configuration again nor loses a finished trial's result (tests/tuning/test_searchers.py kills a driver).
An Optuna journal records more: a trial asked after the last save is told FAIL on restore (``interrupted``).
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
from ray.tune.schedulers import HyperBandForBOHB
# Ray's wrappers import without their optional packages (tune_p7.space.search_settings refuses a search whose package
# is missing)
from ray.tune.search.bohb import TuneBOHB
from ray.tune.search.hyperopt import HyperOptSearch
from ray.tune.search.optuna import OptunaSearch

from tune_p7.core.config import P7Config
from tune_p7.space.file import Space
from tune_p7.tuning.schedulers import _Gated


class GatedHyperBandForBOHB(_Gated, HyperBandForBOHB):
    """BOHB's HyperBand (time = the reported epoch) that also stops any trial whose result trips a gate."""


def reached_budget(result: dict) -> bool:
    """Did the trial of this (flattened) last result run all its epochs without tripping a gate?"""
    epochs = result.get("config/epochs", P7Config().epochs)
    return not result.get("gate") and result.get("epoch", 0) >= epochs


class _BestEpoch:
    """Tells the searcher a finished trial's best epoch value (the best of every epoch's ``metric`` in ``mode``),
    the value the summary ranks by (its best val margin), not the last epoch's. The running best lives in the
    searcher's own attributes, which Tune pickles with the searcher's state, so a resumed search keeps it."""

    def _note(self, trial_id: str, result: dict | None) -> dict | None:
        """Record ``result``'s value in the trial's running best; return the result with the best as the metric."""
        best = self.__dict__.setdefault("_best_values", {})
        value = (result or {}).get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            old = best.get(trial_id)
            better = old is None or (value > old if self.mode == "max" else value < old)
            best[trial_id] = value if better else old
        if not result or trial_id not in best:
            return result
        return {**result, self.metric: best[trial_id]}


def told_state(prior: dict, metric: str, mode: str) -> tuple[str, float | None]:
    """What this module tells a searcher of an earlier trial ({config, results, error}: tune_p7/tuning/
    continuation.py): ("fail", None) when it errored or has no finite value, ("complete", its best epoch's value)
    when it ran its full epochs without a gate, else ("pruned", its last epoch's value)."""
    from tune_p7.tuning.continuation import best_value

    results = prior["results"]
    value = best_value(results, metric, mode)
    if prior["error"] or value is None:
        return "fail", None
    last = {**results[-1], "config/epochs": prior["config"].get("epochs", P7Config().epochs)}
    return ("complete", value) if reached_budget(last) else ("pruned", last.get(metric))


class PruningOptunaSearch(_BestEpoch, OptunaSearch):
    """OptunaSearch that reports each epoch's value at step = epoch, tells a trial stopped before its last
    epoch PRUNED and a finished one its best epoch's value (see the module docstring); ``prior``: the trials of
    the search it continues, added to its study before the first suggestion."""

    def __init__(self, *args, prior=(), **kwargs):
        super().__init__(*args, **kwargs)
        self._prior = list(prior)

    def _setup_study(self, mode) -> None:
        super()._setup_study(mode)
        if self._prior and not self._ot_study.trials:  # a study reloaded from its journal has them already
            self._ot_study.add_trials([self._frozen(p) for p in self._prior])

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self._fail_interrupted()

    def _fail_interrupted(self) -> None:
        """Tell FAIL every RUNNING trial of the study that the restored searcher does not know, as Optuna's
        fail_stale_trials does for a dead worker's trial.

        A journal outlives a killed driver and records each ask at once; the searcher's pickled state and Tune's
        experiment state are saved together, every few seconds. A trial asked between the last save and the kill
        is in the journal but in neither state: the resumed search never tells it (its folder is removed,
        checkpoint.remove_unknown_trials) and optuna-dashboard would show it running forever."""
        from optuna.trial import Trial, TrialState

        known = {t.number for t in self._ot_trials.values()}
        for t in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number not in known:
                Trial(self._ot_study, t._trial_id).set_user_attr(
                    "interrupted", "asked after Tune's last saved state; the search's driver was killed")
                self._ot_study.tell(t.number, state=TrialState.FAIL)

    def _frozen(self, prior: dict):
        """An earlier trial as an Optuna trial in the state on_trial_complete would have told it."""
        import optuna
        from optuna.trial import TrialState

        state, value = told_state(prior, self.metric, self.mode)
        steps = {int(r["epoch"]): r[self.metric] for r in prior["results"]
                 if isinstance(r.get(self.metric), (int, float)) and math.isfinite(r[self.metric])}
        return optuna.trial.create_trial(
            state={"fail": TrialState.FAIL, "complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED}[state],
            value=value if state == "complete" else None, params={k: prior["config"][k] for k in self._space},
            distributions=self._space, intermediate_values=steps, user_attrs={"continued_from": prior["trial_id"]})

    def _report(self, trial_id: str, result: dict) -> None:
        import optuna

        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            with warnings.catch_warnings():  # a resumed trial reports stored epochs again: Optuna keeps the first
                warnings.simplefilter("ignore")
                try:
                    self._ot_trials[trial_id].report(value, int(result.get("epoch", 0)))
                except optuna.exceptions.UpdateFinishedTrialError:  # the journal outlived a killed driver: told
                    pass

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._completed_trials:
            self._note(trial_id, result)
            self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        from optuna.trial import TrialState

        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        if result and not result.get("error"):
            self._report(trial_id, result)  # Tune does not pass the stopping result to on_trial_result
        result = self._note(trial_id, result)
        value = (result or {}).get(self.metric)
        if error or not result or result.get("error") or not (isinstance(value, (int, float))
                                                               and math.isfinite(value)):
            self._ot_study.tell(ot_trial, state=TrialState.FAIL, skip_if_finished=True)
        elif reached_budget(result):
            self._ot_study.tell(ot_trial, value, state=TrialState.COMPLETE, skip_if_finished=True)
        else:
            self._ot_study.tell(ot_trial, state=TrialState.PRUNED, skip_if_finished=True)
        self._completed_trials.add(trial_id)


class PruningHyperOptSearch(_BestEpoch, HyperOptSearch):
    """HyperOptSearch that tells a trial stopped before its last epoch as done without a loss, and a finished one
    its best epoch's value; ``prior``: the trials of the search it continues, added to HyperOpt's Trials as done
    (the same way) before the first suggestion."""

    def __init__(self, *args, prior=(), **kwargs):
        self._prior = list(prior)
        super().__init__(*args, **kwargs)

    def _setup_hyperopt(self) -> None:
        super()._setup_hyperopt()
        if not self._prior:  # set up once (set_search_properties); a restored searcher is unpickled, not set up
            return
        import hyperopt
        from hyperopt.fmin import generate_trial

        docs = []
        for tid, prior in zip(self._hpopt_trials.new_trial_ids(len(self._prior)), self._prior):
            config = {k: prior["config"][k] for k in self._space}
            self._convert_categories_to_indices(config)  # HyperOpt stores a choice as its index
            state, value = told_state(prior, self.metric, self.mode)
            docs.append({**generate_trial(tid, config), "state": hyperopt.JOB_STATE_DONE,
                         "result": {"loss": self.metric_op * value, "status": hyperopt.STATUS_OK}
                         if state == "complete" else {"status": hyperopt.STATUS_FAIL}})
        self._hpopt_trials.insert_trial_docs(docs)
        self._hpopt_trials.refresh()

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._note(trial_id, result)
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        import hyperopt

        ho_trial = self._get_hyperopt_trial(trial_id)
        if ho_trial is None or error or not result or reached_budget(result):
            best = result if error or not result or result.get("error") else self._note(trial_id, result)
            return super().on_trial_complete(trial_id, best, error)
        ho_trial["refresh_time"] = hyperopt.utils.coarse_utcnow()
        ho_trial["state"] = hyperopt.base.JOB_STATE_DONE
        ho_trial["result"] = {"status": hyperopt.STATUS_FAIL}
        self._hpopt_trials.refresh()
        del self._live_trial_mapping[trial_id]


class PlainTuneBOHB(TuneBOHB):
    """TuneBOHB whose suggestions are Python values: ConfigSpace hands out numpy scalars (np.int64 for an integer
    choice), which the typed config refuses."""

    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        return config and {k: v.item() if isinstance(v, np.generic) else v for k, v in config.items()}


def search_alg(space: Space, journal: str | None = None, prior=()):
    """The model-based Tune searcher of ``space.search`` (optuna, hyperopt or bohb). ``journal``: a local file for
    Optuna's study (``JournalStorage``: optuna-dashboard reads it while trials run; the study is named after the
    experiment folder that holds it); ``prior``: the trials of the search it continues (continuation.py)."""
    s = space.search
    points = [dict(p) for p in s.points_to_evaluate] or None  # the searchers mutate them
    common = dict(metric=space.metric, mode=space.mode, points_to_evaluate=points)
    if s.algorithm == "optuna":
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        if journal:
            common.update(storage=JournalStorage(JournalFileBackend(journal)), study_name=Path(journal).parent.name)

        if s.sampler == "gp":
            sampler = optuna.samplers.GPSampler(seed=s.seed, n_startup_trials=s.n_startup_trials)
        else:
            with warnings.catch_warnings():  # group is "experimental" in Optuna 5.0
                warnings.simplefilter("ignore")
                sampler = optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=s.n_startup_trials,
                                                     multivariate=s.multivariate, group=s.group,
                                                     constant_liar=s.constant_liar)
        return PruningOptunaSearch(sampler=sampler, prior=prior, **common)
    if s.algorithm == "hyperopt":
        return PruningHyperOptSearch(n_initial_points=s.n_initial_points, gamma=s.gamma, random_state_seed=s.seed,
                                     prior=prior,
                                     **common)
    if s.algorithm != "bohb":
        raise ValueError(f"not a model-based search algorithm: {s.algorithm!r}")
    return PlainTuneBOHB(bohb_config={"random_fraction": s.random_fraction}, seed=s.seed, **common)


def bohb_scheduler(space: Space) -> GatedHyperBandForBOHB:
    """BOHB's scheduler: HyperBand over epochs up to the space's ``epochs``, with the gates."""
    return GatedHyperBandForBOHB(time_attr="epoch", metric=space.metric, mode=space.mode,
                                 max_t=max(space.values_of("epochs")), reduction_factor=space.search.reduction_factor)
