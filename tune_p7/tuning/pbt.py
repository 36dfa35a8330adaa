"""Population-based training from the space file: PBT and PB2 as the search's scheduler, and the schedules they ran.

Every ``perturbation_interval`` epochs a trial in the bottom ``quantile_fraction`` of the population (by the space's
metric) is paused and restarted from the latest checkpoint of a trial in the top fraction, with that trial's config
perturbed on the mutated keys (PBT: continuous keys times 0.8 or 1.2, a choice moved to a neighbouring value, each
drawn afresh with ``resample_probability``; PB2: new values picked by a GP bandit within the bounds). Values are
kept inside the mutation ranges (Ray's perturbation is unclipped). The trainable tells the other trial's checkpoint
from its own (trainable.restore) and reports ``hp/<key>``, ``exploited_from`` and ``lineage`` with every result, from
which tune_p7.tuning.pbt_history reads what each trial ran.
"""
from __future__ import annotations

from ray import tune
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler
from ray.tune.schedulers.pb2 import PB2

from tune_p7.core.config import P7Config
from tune_p7.space.file import Space, trial_config
from tune_p7.tuning.schedulers import _Gated


class _Population:
    """What PBT must not see: a gated result (PBT would exploit for it, pausing the trial and giving it a new config
    and another trial's checkpoint just before the gate stops it), a result reported again after a restore (a replay
    of a past epoch, decided on before), and a trial's last epoch (it ends there: an exploit would only retrain)."""

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        last = trial_config(trial.config).get("epochs", P7Config.epochs)
        if result.get("gate") or result.get("resumed") or result.get("epoch", 0) >= last:
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def _exploit(self, tune_controller, trial, trial_to_clone) -> None:
        """PBT's exploit, then the handed checkpoint copied into the trial's own folder and handed over from there.

        Ray hands over the other trial's checkpoint by path, and that trial's checkpoint retention (num_to_keep)
        deletes it as soon as it has registered enough newer ones: before this trial restarts when the population
        is time-multiplexed, and always across a killed driver, whose saved state names the path ("Could not
        recover from checkpoint"). The copy (``exploited_*``, not a ``checkpoint_*`` folder: never one of this
        trial's own) is Tune's latest checkpoint of the trial until the trial reports its next one; an older
        copy is deleted (the trial has registered its own checkpoints since).
        """
        import pyarrow.fs as pafs
        from ray.train._internal.session import _TrainingResult

        super()._exploit(tune_controller, trial, trial_to_clone)
        manager = trial.run_metadata.checkpoint_manager
        handed = manager._latest_checkpoint_result
        src, fs = handed.checkpoint, trial.storage.storage_filesystem
        own = trial.storage.trial_fs_path
        dest = f"{own}/exploited_{trial_to_clone.trial_id}_{src.path.rstrip('/').rsplit('/', 1)[-1]}"
        for old in fs.get_file_info(pafs.FileSelector(own, allow_not_found=True)):
            if old.base_name.startswith("exploited_") and old.path != dest:
                fs.delete_dir(old.path)
        fs.create_dir(dest)
        pafs.copy_files(src.path, dest, source_filesystem=src.filesystem, destination_filesystem=fs)
        manager._latest_checkpoint_result = _TrainingResult(checkpoint=tune.Checkpoint(dest, filesystem=fs),
                                                            metrics=handed.metrics)


class GatedPBT(_Gated, _Population, PopulationBasedTraining):
    """Population-based training (time = the reported epoch) that also stops any trial whose result trips a gate."""


class GatedPB2(_Gated, _Population, PB2):
    """PB2 (GP-bandit explore step) that also stops any trial whose result trips a gate."""


class Clip:
    """PBT's custom_explore_fn: every continuous mutated key back inside its [low, high] (PB2's float32 round trip
    can step just outside too)."""

    def __init__(self, bounds: dict[str, tuple[float, float]]):
        self.bounds = bounds

    def __call__(self, config: dict) -> dict:
        return {**config, **{k: min(max(float(config[k]), lo), hi) for k, (lo, hi) in self.bounds.items()}}


def build_scheduler(space: Space):
    """The GatedPBT / GatedPB2 of ``space.scheduler`` (name pbt or pb2)."""
    s = space.scheduler
    bounds = {k: tuple(arg) for k, spec in s.mutations.items() for kind, arg in spec.items() if kind != "choice"}
    common = dict(time_attr="epoch", metric=space.metric, mode=space.mode,
                  perturbation_interval=s.perturbation_interval, quantile_fraction=s.quantile_fraction,
                  custom_explore_fn=Clip(bounds))
    if s.name == "pb2":
        return GatedPB2(hyperparam_bounds={k: list(b) for k, b in bounds.items()}, **common)
    make = {"choice": list, "uniform": lambda a: tune.uniform(*a), "loguniform": lambda a: tune.loguniform(*a)}
    mutations = {k: make[kind](arg) for k, spec in s.mutations.items() for kind, arg in spec.items()}
    return GatedPBT(hyperparam_mutations=mutations, resample_probability=s.resample_probability, **common)
