"""What Ray Tune does on the search's driver that the user did not ask for, kept out of the way: its warnings and
tracebacks about slow or failed saves of its state on the console (``quiet_tune``), and the mlflow import of
its usage telemetry (``skip_telemetry_import_of_mlflow``)."""
from __future__ import annotations

import importlib
import logging
import os
import sys


class OneLine(logging.Filter):
    """A record's exception as ``Type: message`` on its one line instead of a traceback: Tune logs a failed upload of
    its experiment state with one, then goes on and uploads again at its next save."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg, record.args = f"{record.getMessage()}{type(exc).__name__}: {exc}".replace("\n", " "), None
            record.exc_info = record.exc_text = None
        return True


def quiet_tune(verbose: bool) -> None:
    """Keep off the console what is not the user's error: Tune's warnings about slow experiment-state saves (slow
    storage), the traceback of a failed one (OneLine), and, restoring a killed experiment, its "Failed to fetch
    metrics" for each trial killed before its first result (it has none yet and simply starts)."""
    if not verbose:
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
        state = logging.getLogger("ray.tune.execution.experiment_state")
        if not any(isinstance(f, OneLine) for f in state.filters):
            state.addFilter(OneLine())
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")


def skip_telemetry_import_of_mlflow() -> None:
    """Import Ray's MLflow integration with mlflow hidden, so that it holds ``mlflow = None``: Tune's usage telemetry
    (``ray.air._internal.usage.tag_callbacks``, in every ``fit`` with callbacks) imports that integration only to
    read its class names, and with it mlflow wherever mlflow is installed, about a CPU-second of a search that does
    not track. Only for such a search: Ray's MLflow callback, which tune_p7's tracking subclasses
    (tune_p7/tuning/mlflow_trials.py), is then unusable in this process; a search that tracks has imported mlflow
    before (space.tracking_settings.resolve) and is left as it is."""
    if "mlflow" in sys.modules or "ray.air.integrations.mlflow" in sys.modules:
        return
    sys.modules["mlflow"] = None  # `import mlflow` raises ImportError, which Ray's module catches
    try:
        importlib.import_module("ray.air.integrations.mlflow")
    finally:
        del sys.modules["mlflow"]
