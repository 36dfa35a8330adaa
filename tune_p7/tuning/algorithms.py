"""The scheduler and the search algorithm of a space, as a search (search.py) and its replay (replay.py) build them.

Both import what they build only when it is asked for: Ray's schedulers, and the Optuna, HyperOpt and BOHB packages
(1-2 s to import) for a model-based searcher alone.
"""
from __future__ import annotations

from tune_p7.experiment import Experiment
from tune_p7.space.file import Space
from tune_p7.space.scheduler_settings import POPULATION


def search_algorithm(space: Space, exp: str | None = None, prior=()):
    """The Tune searcher of the space's ``search:`` section: None (Tune's default) for an unseeded ``random`` (the
    default without a section), Tune's BasicVariantGenerator for a seeded one, else the model-based one of
    tune_p7.tuning.searchers, imported only then (the Optuna, HyperOpt and BOHB packages take 1-2 s to import).
    ``exp``: the experiment folder (a local one holds an Optuna search's study journal); ``prior``: the trials of
    the search it continues (tune_p7/tuning/continuation.py)."""
    s = space.search
    if s.model_based:
        from tune_p7.tuning.searchers import search_alg

        return search_alg(space, Experiment(exp).journal() if exp is not None else None, prior)
    if prior:
        from tune_p7.tuning.continuation import random_searcher

        return random_searcher(space, prior)
    if s.seed is None:
        return None
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(random_state=s.seed)


def make_scheduler(space: Space):
    """The Tune scheduler of the space: BOHB's HyperBand, gated ASHA, PBT / PB2 or gated FIFO (also the replay's,
    tune_p7/tuning/replay.py)."""
    from tune_p7.tuning.schedulers import GatedASHA, GatedFIFO

    s = space.scheduler
    if space.search.algorithm == "bohb":
        from tune_p7.tuning.searchers import bohb_scheduler

        return bohb_scheduler(space)
    if s.name == "asha":
        return GatedASHA(time_attr="epoch", metric=space.metric, mode=space.mode,
                         max_t=max(space.values_of("epochs")), grace_period=s.grace_period,
                         reduction_factor=s.reduction_factor, brackets=s.brackets)
    if s.name in ("pbt", "pb2"):
        from tune_p7.tuning.pbt import build_scheduler

        return build_scheduler(space)
    return GatedFIFO()


def max_concurrent(requested: int, cpus_per_trial: float, space: Space | None = None) -> int | None:
    """Tune's ``max_concurrent_trials``: ``requested`` if > 0, else as many trials as the cluster's CPUs hold when
    the search starts. Then a trial is created only when a worker is free, and a reused worker that has just
    ended its trial takes the next one. Without the limit Tune stages the next trial while every worker is busy
    and starts a new worker for it; with trials about as long as a worker's start (about 3 CPU-s) a running trial
    often ends first, takes the staged trial over, and the starting worker is thrown away, one after another
    (docs/measurements.md, 2026-12-07). A ``space`` searched by BOHB's HyperBand, PBT or PB2 keeps Tune's default,
    None: those schedulers pause trials to wait for others, and a limit on live trials could leave only paused ones.
    The confirmation (FIFO) passes no space."""
    pausing = space is not None and (space.search.algorithm == "bohb" or space.scheduler.name in POPULATION)
    if requested or pausing:
        return requested or None
    import ray

    return slots(ray.cluster_resources().get("CPU", 0.0), cpus_per_trial)


def slots(cluster_cpus: float, cpus_per_trial: float) -> int | None:
    """Trials that fit at once on ``cluster_cpus`` (fractions of a CPU per trial summed exactly: 2 CPUs hold 20
    trials of 0.1); None (no limit) on a cluster without CPUs yet, such as an autoscaling one's head."""
    n = int(cluster_cpus / cpus_per_trial + 1e-9)
    return n if n >= 1 else None


def limited(search_alg, limit: int | None):
    """(search_alg, max_concurrent_trials) for tune.TuneConfig. Tune applies max_concurrent_trials to a Searcher
    (through a ConcurrencyLimiter) or to its own default generator, but ignores it, with a warning, for a
    BasicVariantGenerator it is given (a seeded random search, a random continuation): that one gets the limit
    itself."""
    from ray.tune.search import BasicVariantGenerator

    if limit and isinstance(search_alg, BasicVariantGenerator):
        search_alg.max_concurrent = limit
        return search_alg, None
    return search_alg, limit
