"""Replay a search against a recorded full grid in simulated time: no Ray processes, no training.

The table (tune_p7.tuning.replay_table) holds every configuration of a finite space trained to its last epoch with
one or more seeds. ``replay`` drives the very scheduler
and searcher objects a real search builds from the space (algorithms.make_scheduler, algorithms.search_algorithm: gated
ASHA, FIFO, BOHB's HyperBand; Tune's BasicVariantGenerator, the Optuna / HyperOpt / BOHB searchers behind Tune's
SearchGenerator and ConcurrencyLimiter, Ray's own Trial objects) with results read from the table, on W simulated
workers: each epoch costs the table's seconds for it on a simulated clock. ``SimController`` offers what those objects
call on Tune's controller (get_trials, stop_trial, search_alg) and follows TuneController's order of calls:
a result goes to the scheduler first, to the searcher only if the trial goes on; a stopped or finished trial is
told to both with its last result; a new trial is asked for only when a worker is free (max_concurrent = W).
``one_epoch_top_k`` runs the one-epoch top-k baseline on the same clock, as a Replay the same measures read.

Simplifications (a real search differs here): a trial's seed is drawn from the table's seeds by its creation order;
a BOHB trial resumed after a pause does not report its stored epochs again (tune_p7.tuning.trainable does, marked
``resumed``); actor start-up costs nothing. The space's gates are applied to each recorded epoch's val metrics (a
table recorded without gates holds every epoch) as the trainable applies them, where the table holds those metrics.
"""
from __future__ import annotations

import heapq
import itertools
import math
import random
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tune_p7.core.config import P7Config
from tune_p7.space.file import Space
from tune_p7.tuning.replay_table import Table

def search_space(space_text: str, sections: dict, seed: int | None = None) -> Space:
    """The recorded space (its YAML text) as a search over the table, checked as any space file is: every grid a
    choice (a random search samples configurations instead of walking the grid), the given top-level sections
    (``search``, ``scheduler``, ``num_samples``) in place of the recorded ones, ``search.seed`` = ``seed`` unless
    given."""
    import yaml

    from tune_p7.space.file import load_space

    raw = yaml.safe_load(space_text)
    raw["params"] = {k: {"choice": v["grid"]} if isinstance(v, dict) and "grid" in v else v
                     for k, v in raw["params"].items()}
    raw.update({k: v for k, v in sections.items()})
    search = dict(raw.get("search") or {})
    if seed is not None:
        search.setdefault("seed", seed)
    raw["search"] = search
    if search.get("algorithm") == "bohb":
        raw.pop("scheduler", None)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "replay_space.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return load_space(path)


class SimController:
    """What Tune's schedulers and searchers call on the TuneController, over simulated workers."""

    def __init__(self, search_alg, scheduler):
        self.search_alg, self.scheduler = search_alg, scheduler
        self.trials: list = []

    def get_trials(self):
        return self.trials

    def get_live_trials(self):
        return {t for t in self.trials if not t.is_finished()}

    def stop_trial(self, trial) -> None:
        """TuneController.stop_trial: a PENDING / PAUSED trial is removed, a RUNNING one completed."""
        from ray.tune.experiment import Trial
        from ray.tune.utils import flatten_dict

        if trial.status in (Trial.ERROR, Trial.TERMINATED):
            return
        if trial.status in (Trial.PENDING, Trial.PAUSED):
            self.scheduler.on_trial_remove(self, trial)
            self.search_alg.on_trial_complete(trial.trial_id)
        else:
            last = flatten_dict(trial.last_result)
            self.scheduler.on_trial_complete(self, trial, last)
            self.search_alg.on_trial_complete(trial.trial_id, result=last)
        trial.set_status(Trial.TERMINATED)


def _trainable(config: dict) -> None:  # only its name is used: Tune's Experiment needs a trainable
    raise RuntimeError("the replay trains nothing")


def build(space: Space, num_samples: int, workers: int, storage: str, keys=None):
    """(search_alg, scheduler) as tune.run wires them: a Searcher behind ConcurrencyLimiter(W) and SearchGenerator,
    random search as BasicVariantGenerator(max_concurrent=W), search and scheduler properties set. ``keys``: keep
    only these keys and ``epochs`` in the param space (the fixed ones change no decision; Tune deep-copies the
    whole space for every trial, half a random replay's time)."""
    from ray.tune.experiment import Experiment
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, SearchGenerator, Searcher

    from tune_p7.tuning.algorithms import make_scheduler, search_algorithm

    param_space = {k: v for k, v in space.param_space().items() if keys is None or k in keys or k == "epochs"}
    alg = search_algorithm(space)
    if alg is None:
        alg = BasicVariantGenerator(max_concurrent=workers)
    elif isinstance(alg, Searcher):
        alg = SearchGenerator(ConcurrencyLimiter(alg, max_concurrent=workers))
    else:
        alg.max_concurrent = workers
    alg.set_search_properties(space.metric, space.mode, param_space)
    scheduler = make_scheduler(space)
    scheduler.set_search_properties(space.metric, space.mode)
    alg.add_configurations([Experiment("replay", _trainable, config=param_space, num_samples=num_samples,
                                       storage_path=storage)])
    return alg, scheduler


def warmup_epochs(space: Space, config: dict) -> int:
    """A trial's warm-up epochs (the margin gate waits them out): its config's, else the space's fixed value, else
    P7Config's default."""
    fixed = space.params.get("warmup_epochs")
    return int(config.get("warmup_epochs", fixed if isinstance(fixed, int) else P7Config.warmup_epochs))


def trial_seed(n: int, seeds: list[int], replay_seed: int) -> int:
    """The table seed the n-th trial (in creation order) reads: a fixed draw from (replay seed, n)."""
    return seeds[zlib.crc32(f"{replay_seed}:{n}".encode()) % len(seeds)]


@dataclass
class Replay:
    """One replayed search: each reported epoch in simulated order, and where each trial ended."""
    events: list[dict]  # {time, epochs, trial_id, config, epoch, value}
    ended: dict[str, tuple[tuple, int]]  # trial_id -> (config, last epoch)
    wall: float
    stuck: bool = False


def replay(table: Table, space: Space, num_samples: int, workers: int = 4, seed: int = 0) -> Replay:
    """Replay ``space``'s scheduler and searcher (a search_space over the table) against ``table``."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler
    from ray.tune.utils import flatten_dict

    random.seed(seed)  # hpbandster (BOHB) and HyperOpt draw from the global generators too: a replay is a
    np.random.seed(seed)  # function of its seeds, whatever ran before it in the process
    with tempfile.TemporaryDirectory() as storage:
        alg, scheduler = build(space, num_samples, workers, storage, table.keys)
        ctl = SimController(alg, scheduler)
        clock, order = 0.0, itertools.count()
        heap: list = []  # (finish time, tie-break, trial, epoch)
        progress: dict[str, int] = {}  # trial_id -> epochs done
        number: dict[str, int] = {}  # trial_id -> creation order
        events, ended, stuck = [], {}, False
        seeds = table.seeds

        def curve(trial):
            cfg = tuple(trial.config[k] for k in table.keys)
            if cfg not in table.curves:
                raise KeyError(f"configuration {dict(zip(table.keys, cfg))} is not in the table")
            return cfg, table.curves[cfg][trial_seed(number[trial.trial_id], seeds, seed)]

        def gate_of(trial, cfg, epoch):
            s = trial_seed(number[trial.trial_id], seeds, seed)
            return table.gate(cfg, s, epoch, space.gates, warmup_epochs(space, trial.config))

        def start(trial):
            trial.set_status(Trial.RUNNING)
            e = progress.setdefault(trial.trial_id, 0) + 1
            heapq.heappush(heap, (clock + curve(trial)[1][1][e - 1], next(order), trial, e))

        def fill():
            while sum(t.status == Trial.RUNNING for t in ctl.trials) < workers:
                trial = scheduler.choose_trial_to_run(ctl)
                if trial is None:
                    new = None if alg.is_finished() else alg.next_trial()
                    if new is None:
                        return
                    number[new.trial_id] = len(ctl.trials)
                    ctl.trials.append(new)
                    scheduler.on_trial_add(ctl, new)
                    continue
                if trial.status == Trial.PAUSED:
                    alg.searcher.on_unpause(trial.trial_id)
                start(trial)

        fill()
        while heap:
            clock, _, trial, epoch = heapq.heappop(heap)
            cfg, (values, _) = curve(trial)
            progress[trial.trial_id] = epoch
            config = dict(trial.config)
            result = {table.metric: float(values[epoch - 1]), "epoch": epoch, "training_iteration": epoch,
                      "gate": gate_of(trial, cfg, epoch), "trial_id": trial.trial_id, "config": config, "done": False}
            flat = flatten_dict(result)
            decision = scheduler.on_trial_result(ctl, trial, flat)
            if decision != TrialScheduler.STOP:
                alg.on_trial_result(trial.trial_id, flat)
            trial.update_last_result(result)
            events.append({"time": clock, "epochs": len(events) + 1, "trial_id": trial.trial_id, "config": cfg,
                           "epoch": epoch, "value": float(values[epoch - 1])})
            last = epoch >= len(values) or epoch >= config.get("epochs", len(values))
            if decision == TrialScheduler.CONTINUE and not last:
                start(trial)
            elif decision == TrialScheduler.PAUSE and not last:
                trial.set_status(Trial.PAUSED)
            else:  # STOP, or the trainable returned after its last epoch
                ctl.stop_trial(trial)
            fill()
            if not heap and any(t.status in (Trial.PENDING, Trial.PAUSED) for t in ctl.trials):
                stuck = True  # nothing runs and the scheduler starts nothing: a real search would hang here
        for t in ctl.trials:
            ended[t.trial_id] = (tuple(t.config[k] for k in table.keys), progress.get(t.trial_id, 0))
        return Replay(events, ended, clock, stuck)


def one_epoch_top_k(table: Table, samples: int, k: int, workers: int = 4, seed: int = 0) -> Replay:
    """The baseline a multi-fidelity method must beat ("Is one epoch all you need?", 2023): ``samples``
    configurations drawn from the table without replacement train one epoch each, then the ``k`` best by that
    epoch's value (NaN last) train on to their last epoch: ``samples + k * (epochs - 1)`` trial-epochs. On
    ``workers`` simulated workers, as in ``replay``: each epoch costs its recorded seconds, a job goes to the
    first free worker, and the second stage starts once every first epoch has ended (it ranks all of them). No gate
    stops its runs."""
    configs = random.Random(seed).sample(sorted(table.curves), min(samples, len(table.curves)))
    seeds = table.seeds  # a property that walks every curve: once, not per configuration
    runs = {f"top_k_{n:05d}": (cfg, table.curves[cfg][trial_seed(n, seeds, seed)]) for n, cfg in enumerate(configs)}
    free = [0.0] * workers  # a heap of the times the workers become free
    events: list[dict] = []

    def run(trial_id: str, first: int, last: int) -> None:
        cfg, (values, seconds) = runs[trial_id]
        clock = heapq.heappop(free)
        for epoch in range(first, last + 1):
            clock += seconds[epoch - 1]
            events.append({"time": clock, "trial_id": trial_id, "config": cfg, "epoch": epoch,
                           "value": float(values[epoch - 1])})
        heapq.heappush(free, clock)

    for trial_id in runs:
        run(trial_id, 1, 1)
    free = [max(free)] * workers

    def first_epoch(trial_id: str) -> float:
        v = table.sign * runs[trial_id][1][0][0]
        return v if math.isfinite(v) else -math.inf

    top = sorted(runs, key=first_epoch, reverse=True)[:k]
    for trial_id in top:
        run(trial_id, 2, len(runs[trial_id][1][0]))
    events.sort(key=lambda e: e["time"])  # stable: ties keep their order
    for n, event in enumerate(events, 1):
        event["epochs"] = n
    ended = {t: (cfg, len(curve[0]) if t in top else 1) for t, (cfg, curve) in runs.items()}
    return Replay(events, ended, max(free))


def incumbent_regret(table: Table, rep: Replay) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(simulated time, trial-epochs, regret of the incumbent) after each reported epoch. The incumbent is the
    configuration of the best value observed so far (what the search would hand back); its regret is the table's:
    best value minus the incumbent's value (mean over seeds of its best epoch)."""
    best, inc, out = -math.inf, None, []
    for ev in rep.events:
        v = table.sign * ev["value"]
        if math.isfinite(v) and v > best:
            best, inc = v, ev["config"]
        out.append(table.regret(inc) if inc is not None else math.inf)
    return (np.array([e["time"] for e in rep.events]), np.array([e["epochs"] for e in rep.events]),
            np.array(out))


def reach(table: Table, rep: Replay, tolerance: float | None = None) -> tuple[float, float]:
    """(simulated seconds, trial-epochs) until the incumbent is within ``tolerance`` (default: the best
    configuration's own seed noise) of the table's best; (inf, inf) if never."""
    tol = table.best()[2] if tolerance is None else tolerance
    times, epochs, regret = incumbent_regret(table, rep)
    hit = np.flatnonzero(regret <= tol + 1e-12)
    return (float(times[hit[0]]), float(epochs[hit[0]])) if len(hit) else (math.inf, math.inf)


def regret_at(table: Table, rep: Replay, budgets) -> list[float]:
    """The incumbent's normalised regret (Table.normalised: 0 the best, 1 the worst) once ``b``
    trial-epochs are spent, for each b of ``budgets``: methods compared at equal compute. A replay that spent fewer
    keeps its last incumbent; inf before its first finite result."""
    _, epochs, regret = incumbent_regret(table, rep)
    normalised = table.normalised(regret)
    idx = np.searchsorted(epochs, np.asarray(budgets, float), side="right") - 1
    return [float(normalised[i]) if i >= 0 else math.inf for i in idx]


def describe(table: Table) -> dict[str, Any]:
    cfg, value, noise = table.best()
    return {"configurations": len(table.curves), "seeds": table.seeds, "best_config": dict(zip(table.keys, cfg)),
            "best_value": value, "best_seed_noise": noise, "targets": table.targets(), **table.diagnostics(),
            "worst_regret": table.worst_regret(), "metric": table.metric, "mode": table.mode}
