"""Every trial of a search as an MLflow run nested under the search's parent run, logged live from the driver by
Ray Tune's own ``MLflowLoggerCallback`` (the parent and the summary's figures: tune_p7/report/tracking.py).

What Ray's callback does as it is: one run per trial, the trial's config as params, every result's numbers as
metrics, the run ended FINISHED or FAILED. What this subclass adds, where the callback does not fit:

- **nesting**: MLflow nests a run under another by the ``mlflow.parentRunId`` tag; the callback's ``tags`` go on
  every trial's run, so the parent's id there nests them all (the callback has no notion of a parent itself);
- **step = epoch**: the callback's step is Tune's ``training_iteration``, which a PBT exploit or a restored
  trial does not keep in step with the epoch the trial trained;
- **one run per trial across --resume**: the callback keeps its trial -> run map in memory, so a resumed search
  would open a second run per trial; here a trial's run is found again by its ``tune_p7.trial_id`` tag, reopened,
  and the epochs it logged before are not logged twice.

The callback runs in the driver: trials on other nodes never talk to MLflow, so a tracking store the driver
reaches is enough (``setup_mlflow``, which logs from inside each trial, would need one every node reaches).
"""
from __future__ import annotations

from ray.air.integrations.mlflow import MLflowLoggerCallback

PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag: the UI and search_runs nest a run under this run id
TRIAL_TAG = "tune_p7.trial_id"
KIND_TAG = "tune_p7.kind"  # trial | confirmation


class NestedTrialRuns(MLflowLoggerCallback):
    """Ray's MLflowLoggerCallback with every trial's run nested under ``parent_run_id``, metrics at step = the
    reported ``epoch``, one run per trial across a resume."""

    def __init__(self, tracking_uri: str, experiment_name: str, parent_run_id: str, kind: str = "trial"):
        super().__init__(tracking_uri, experiment_name=experiment_name,
                         tags={PARENT_TAG: parent_run_id, KIND_TAG: kind})
        self.parent_run_id = parent_run_id
        self._logged_epochs: dict[str, int] = {}

    def _client(self):
        from mlflow import MlflowClient

        return MlflowClient(self.tracking_uri)

    def _existing_run(self, trial_id: str):
        """The run a resumed search opened for this trial before, or None."""
        runs = self._client().search_runs([self.mlflow_util.experiment_id], max_results=1, filter_string=(
            f"tags.`{PARENT_TAG}` = '{self.parent_run_id}' and tags.`{TRIAL_TAG}` = '{trial_id}'"))
        return runs[0] if runs else None

    def log_trial_start(self, trial) -> None:
        if trial not in self._trial_runs:
            run = self._existing_run(trial.trial_id)
            if run is None:
                run = self.mlflow_util.start_run(tags={**self.tags, TRIAL_TAG: trial.trial_id,
                                                       "trial_name": str(trial)}, run_name=str(trial))
            else:  # resumed: reopen it, and skip the epochs it has
                self._client().update_run(run.info.run_id, status="RUNNING")
                self._logged_epochs[trial.trial_id] = int(run.data.metrics.get("epoch", 0))
            self._trial_runs[trial] = run.info.run_id
        from mlflow.entities import Param
        from ray.tune.utils import flatten_dict

        # params and metrics in one batch each, not the callback's one call per key (~20 ms each on SQLite)
        self._client().log_batch(self._trial_runs[trial], params=[
            Param(k, str(v)) for k, v in flatten_dict(trial.config, delimiter=".").items()])

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        import time

        from mlflow.entities import Metric

        epoch = int(result.get("epoch") or result.get("training_iteration") or 0)
        if epoch <= self._logged_epochs.get(trial.trial_id, 0):
            return  # logged before the resume: a restored trial reports its stored epochs again
        self._logged_epochs[trial.trial_id] = epoch
        now = int(time.time() * 1000)
        self._client().log_batch(self._trial_runs[trial], metrics=[
            Metric(k, float(v), now, epoch) for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)])
