"""A trial's result.json: Tune's writer, without the step that drops results when a trial restarts (the reader is
tune_p7.experiment.Experiment.trial_results)."""
from __future__ import annotations

from pathlib import Path

from ray.tune.logger import JsonLoggerCallback


class KeepLocalResults(JsonLoggerCallback):
    """JsonLoggerCallback, except that a trial restarting under the same driver keeps its local result.json.

    Tune replaces the driver's local file with the storage copy at every trial (re)start, and that copy lags by
    the sync period: under PBT, whose exploits and pauses restart trials every few epochs, most results of a fast
    search were lost that way (the summary then showed one epoch of a five-epoch trial). The local file holds
    every row the storage copy has; the storage copy is still read when there is no local file (a resumed
    experiment's new driver).
    """

    def _restore_from_remote(self, file_name: str, trial) -> None:
        if not Path(trial.local_path, file_name).exists():
            super()._restore_from_remote(file_name, trial)

