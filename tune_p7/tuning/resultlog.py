"""A trial's result.json: Tune's writer, without the step that drops results when a trial restarts, and the reader
that the summary and the confirmation stage share."""
from __future__ import annotations

import json
from pathlib import Path

from ray.tune.logger import JsonLoggerCallback

from tune_p7 import storage


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


def read_results(exp: str, trial_dir: str) -> list[dict]:
    """A trial's result.json, one JSON object a line; a torn last line (crash mid-write) is skipped."""
    path = storage.join(exp, trial_dir, "result.json")
    if not storage.exists(path):
        return []
    rows = []
    for line in storage.read_bytes(path).decode("utf-8", "replace").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
