"""A search logged to MLflow: one parent run per search, its trials nested under it (live, by
tune_p7/tuning/mlflow_trials.py), the confirmation's seeds nested under it too, and what the summary found on it.

The parent run holds: as params, the space (each key's value or sampler), the search algorithm, scheduler, metric
and trial count; as tags, the data's and the space's SHA-256, the experiment folder and the search it continues;
as metrics, the probe's figures (``probe.<split>.<figure>``), the ranked table's top trial (``best.<metric>``) and
the Confirmed table's figures (``confirmed.<rank>.<figure>``, with ``_lo`` / ``_hi``: the 95% interval); the
recommendation as the tag ``recommendation``; summary.md, summary.html, summary.parquet, the plots and the space
file as artifacts. Each trial's run gets its ranked-table row as tags (``status``, ``gate``, ``rank``, ``verdict``,
``deploy_ok``). ``tracking.json`` in the experiment folder keeps the run ids: a resumed search reopens the same
parent, and a continued search (tune_p7/tuning/continuation.py) writes to the same store, its parent tagged with
the parent it continues.

Everything is logged from the driver, through MLflow's ``MlflowClient`` (never the module's active run, which is
one per process).
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

from tune_p7.experiment import (CONFIRM_FOLDER, IMPORTANCE, IMPORTANCE_PLOTS, MLFLOW_DB, PLOTS, PROBE_MD, RANKED,
                                RECORD, SUMMARY_HTML, SUMMARY_MD, Experiment)
from tune_p7.space.file import Space
from tune_p7.space.tracking_settings import TrackingSettings
from tune_p7.tuning.mlflow_trials import KIND_TAG, PARENT_TAG, TRIAL_TAG, NestedTrialRuns

# the parent run's artifacts: the report, the search record and the probe
ARTIFACTS = (SUMMARY_MD, SUMMARY_HTML, RANKED, IMPORTANCE_PLOTS[0], IMPORTANCE, *PLOTS, RECORD, PROBE_MD)
ROW_TAGS = ("status", "gate", "rank", "verdict", "deploy_ok", "stopped_epoch")
MAX_TAG = 5000  # MLflow refuses longer tag values


def read_handle(exp: str) -> dict | None:
    return Experiment(exp).tracking()


def default_uri(exp: str) -> str:
    """MLflow's SQLite store in the experiment folder (``sqlite:////abs/EXP/mlflow.db``)."""
    return f"sqlite:///{Experiment(exp).file(MLFLOW_DB)}"


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def space_params(space: Space) -> dict[str, str]:
    """The space as MLflow params: each key's fixed value or ``sampler [args]``, and how the search ran."""
    out = {f"space.{k}": (f"{next(iter(v))} {next(iter(v.values()))}" if isinstance(v, dict) else str(v))
           for k, v in space.params.items()}
    if space.runs:
        out["space.runs"] = json.dumps(space.runs)
    out.update({"num_samples": str(space.num_samples), "metric": space.metric, "mode": space.mode,
                "search.algorithm": space.search.algorithm, "scheduler": space.scheduler.name})
    return {k: v[:MAX_TAG] for k, v in out.items()}


def start(exp: str, name: str, settings: TrackingSettings, space: Space, record: dict) -> dict:
    """The parent run of this search (reopened on --resume, else created, and its handle stored in the experiment
    folder); returns the handle. A continued search's default store is the store of the search it continues."""
    from mlflow.entities import Param

    handle = read_handle(exp)
    if handle:
        _client(handle["uri"]).update_run(handle["parent_run_id"], status="RUNNING")
        return handle
    before = read_handle(record["continues"]) if record.get("continues") else None
    uri = settings.uri or (before["uri"] if before else default_uri(exp))
    client = _client(uri)
    found = client.get_experiment_by_name(settings.experiment)
    # a SQLite store keeps artifacts beside it; a server puts them where it was told to (--artifacts-destination)
    artifacts = uri.removeprefix("sqlite:///").rsplit("/", 1)[0] + "/mlartifacts" if uri.startswith("sqlite") \
        else None
    experiment_id = found.experiment_id if found else client.create_experiment(settings.experiment, artifacts)
    tags = {"tune_p7.experiment": exp, "tune_p7.space_sha256": record.get("space_sha256", ""),
            "tune_p7.data_sha256": record.get("data_sha256", ""), "tune_p7.data": record.get("data", ""),
            "mlflow.note.content": space.description[:MAX_TAG]}
    if before:
        tags.update({"tune_p7.continues": record["continues"], "tune_p7.continues_run": before["parent_run_id"]})
    run = client.create_run(experiment_id, run_name=name, tags={k: v for k, v in tags.items() if v})
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in space_params(space).items()])
    handle = {"uri": uri, "experiment": settings.experiment, "experiment_id": experiment_id,
              "parent_run_id": run.info.run_id}
    Experiment(exp).write_tracking(handle)
    return handle


def callbacks(handle: dict | None) -> list:
    """The Tune callback that logs every trial as a nested run (none without tracking)."""
    if not handle:
        return []
    return [NestedTrialRuns(handle["uri"], handle["experiment"], handle["parent_run_id"])]


def _numbers(prefix: str, tree, out: dict[str, float]) -> dict[str, float]:
    """Every finite number of a nested mapping as ``prefix.key.subkey`` (``key.subkey`` for prefix "")."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            _numbers(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool) and math.isfinite(tree):
        out[prefix] = float(tree)
    return out


def _log_metrics(client, run_id: str, values: dict[str, float], step: int = 0) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, step) for k, v in values.items()]
    for i in range(0, len(metrics), 1000):  # MLflow's batch limit
        client.log_batch(run_id, metrics=metrics[i:i + 1000])


def _runs_by_trial(client, handle: dict, kind: str) -> dict[str, str]:
    runs = client.search_runs([handle["experiment_id"]], max_results=5000, filter_string=(
        f"tags.`{PARENT_TAG}` = '{handle['parent_run_id']}' and tags.`{KIND_TAG}` = '{kind}'"))
    return {r.data.tags.get(TRIAL_TAG): r.info.run_id for r in runs}


def tag_trials(client, handle: dict, ranked) -> None:
    """Each trial's run tagged with its row of the ranked table (how it ended, the gate that stopped it, its
    rank). A continued search's table also ranks the trials of the search it continues: those runs live under
    that search's parent and are tagged there."""
    runs = _runs_by_trial(client, handle, "trial")
    for row in ranked.to_dict("records"):
        run_id = runs.get(row["trial_id"])
        if run_id:
            for key in ROW_TAGS:
                value = row.get(key)
                if value is not None and not (isinstance(value, float) and math.isnan(value)):
                    client.set_tag(run_id, key, str(value))


def log_confirmation(client, handle: dict, exp: str) -> None:
    """Every confirmation seed as a run nested under the parent (its config, every epoch's metrics, its status),
    and the Confirmed table's figures and the recommendation on the parent."""
    from mlflow.entities import Param
    from ray.tune import ExperimentAnalysis

    from tune_p7.report import conclusions

    stored = Experiment(exp)
    path = stored.confirm_folder
    done = _runs_by_trial(client, handle, "confirmation")
    for t in ExperimentAnalysis(path).trials:
        if t.trial_id in done:
            continue
        run = client.create_run(handle["experiment_id"], run_name=f"confirm {t.trial_id}", tags={
            PARENT_TAG: handle["parent_run_id"], KIND_TAG: "confirmation", TRIAL_TAG: t.trial_id})
        flat = _numbers("", t.config, {}) | {k: v for k, v in t.config.items() if isinstance(v, str)}
        client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in flat.items()])
        for result in Experiment(path).trial_results(t.storage.trial_dir_name):
            _log_metrics(client, run.info.run_id, _numbers("", {k: v for k, v in result.items() if k != "config"},
                                                           {}), step=int(result.get("epoch", 0)))
        client.set_terminated(run.info.run_id, "FAILED" if t.status == "ERROR" else "FINISHED")
    agg = conclusions.aggregate(stored.confirmed(), stored.confirmed_articles())
    figures = {}
    for row in agg.to_dict("records"):
        _numbers(f"confirmed.{row['config_rank']}", {k: v for k, v in row.items() if k != "config_rank"}, figures)
        for key in ("deploy", "beats_direct", "beats_ridge", "robust_pass", "robust_deploy"):
            figures[f"confirmed.{row['config_rank']}.{key}"] = float(bool(row[key]))
    _log_metrics(client, handle["parent_run_id"], figures)
    text = conclusions.recommendation(agg, stored.plan())
    client.set_tag(handle["parent_run_id"], "recommendation", text[:MAX_TAG])


def finish(exp: str, handle: dict, finished: bool) -> None:
    """What the search found, on the parent run; the parent ended FINISHED, or KILLED when trials are unfinished
    (a resume reopens it)."""
    client = _client(handle["uri"])
    parent = handle["parent_run_id"]
    stored = Experiment(exp)
    probe = stored.probe()
    if probe is not None:
        _log_metrics(client, parent, _numbers("probe", probe.get("splits", {}), {}))
    ranked = stored.ranked()
    tag_trials(client, handle, ranked)
    if len(ranked):
        best = ranked.iloc[0]
        _log_metrics(client, parent, {f"best.{k}": float(best[k]) for k in ("best_margin", "margin", "r_at_5",
                                                                             "mrr_at_10", "cos_next")
                                      if k in best and isinstance(best[k], (int, float)) and math.isfinite(best[k])})
        client.set_tag(parent, "best_trial", str(best["trial_id"]))
    _log_metrics(client, parent, {"trials": float(len(ranked))})
    if stored.has_confirmed() and stored.exists(CONFIRM_FOLDER):
        log_confirmation(client, handle, exp)
    with tempfile.TemporaryDirectory() as tmp:  # the experiment folder may be s3://: MLflow uploads local files
        for name, data in stored.stored_files(ARTIFACTS).items():
            (Path(tmp) / name).write_bytes(data)
            client.log_artifact(parent, str(Path(tmp) / name))
    client.set_terminated(parent, "FINISHED" if finished else "KILLED")
