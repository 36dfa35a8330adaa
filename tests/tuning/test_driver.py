"""The search driver's setup of Ray Tune (tune_p7/tuning/driver.py): nothing on the console or in the process that the
user did not ask for."""
import io
import logging
import os

from conftest import run_cli

from tune_p7.tuning.driver import quiet_tune


def test_a_failed_save_of_tunes_state_reaches_the_console_as_one_line(monkeypatch):
    """Tune logs a failed upload of its experiment state with a traceback and goes on: the console gets one line."""
    for var in ("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "RAY_AIR_NEW_OUTPUT"):
        monkeypatch.setenv(var, os.environ.get(var, "0"))  # quiet_tune sets them; restored after the test
    logger = logging.getLogger("ray.tune.execution.experiment_state")
    monkeypatch.setattr(logger, "filters", [])
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logger.addHandler(handler)
    try:
        quiet_tune(verbose=False)
        try:
            raise FileNotFoundError("/s/e/experiment_state.json.tmp")
        except FileNotFoundError:
            logger.error("Saving experiment state to storage at '%s' failed with exception: ", "/s/e", exc_info=True)
    finally:
        logger.removeHandler(handler)
    assert out.getvalue().splitlines() == ["Saving experiment state to storage at '/s/e' failed with exception: "
                                           "FileNotFoundError: /s/e/experiment_state.json.tmp"]


TELEMETRY = """
import sys
from tune_p7.tuning.driver import skip_telemetry_import_of_mlflow
from tune_p7.tuning.resultlog import KeepLocalResults
skip_telemetry_import_of_mlflow()
from ray.air._internal.usage import tag_callbacks  # what Tune's fit() calls with the search's callbacks
tag_callbacks([KeepLocalResults()])
print("integration:", "ray.air.integrations.mlflow" in sys.modules, "mlflow:", "mlflow" in sys.modules)
import mlflow
print("then imported:", mlflow.MlflowClient.__name__)
"""


def test_tunes_usage_telemetry_loads_no_mlflow_in_a_search_that_does_not_track():
    """Tune counts a fit()'s callbacks by importing its MLflow integration, which imports mlflow (about a CPU-second)
    where it is installed: a search that does not track gets the integration without mlflow, and mlflow still
    imports afterwards."""
    r = run_cli("-c", TELEMETRY, timeout=120)
    assert r.stdout.splitlines() == ["integration: True mlflow: False", "then imported: MlflowClient"], \
        r.stdout + r.stderr[-2000:]
