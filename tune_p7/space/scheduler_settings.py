"""``scheduler:`` of a search space: ASHA / FIFO settings, or population-based training (PBT, PB2) with the keys
it mutates (tune_p7/tuning/pbt.py builds the scheduler from them)."""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field, fields

from tune_p7.core.config import P7Config
from tune_p7.errors import InputError
from tune_p7.space.values import param, section

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


def read_scheduler(src, raw) -> SchedulerSettings:
    """The validated ``scheduler:`` mapping of space file ``src`` (``raw``: the parsed file)."""
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
    sched = section(src, {"scheduler": {k: v for k, v in values.items() if k != "mutations"}}, "scheduler",
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
        raise InputError(src, "scheduler pb2 needs scikit-learn: pip install -r requirements.txt")
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
        (kind, arg), = param(src, key, spec, "scheduler.mutations", kinds).items()
        mutations[key] = {kind: sorted(arg) if kind == "choice" else arg}  # PBT shifts a choice to a neighbour
    return SchedulerSettings(**{**{f.name: getattr(sched, f.name) for f in fields(sched)}, "mutations": mutations})


def check_mutations(space) -> None:
    """Of a ``tune_p7.space.file.Space`` (not imported here: that module imports this one): the start values of every
    mutated key (params) lie in its mutation's range; no run sets one; a population of >= 2 trials; perturbations
    happen before the last epoch; checkpoints live long enough to be exploited."""
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
