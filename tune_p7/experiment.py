"""The experiment folder: the one place that knows the names of the files a search keeps there.

An ``Experiment`` is a folder (local path or storage URI) with a named reader and writer for each file. The stages
write in this order, and a later stage's file is read only through an explicit "if it exists" reader:

=====================  ============================================  ==============================================
stage                  writes                                        reads
=====================  ============================================  ==============================================
search.py              the search record, the probe                  the record (resume, continue)
Tune                   trial folders, its experiment state           (its own names; ``trial_results`` reads them)
report.summary         the ranked table, its page and plots,         the record, the probe, the confirmation's
                       the importance report                         results and the evaluation, if they exist
tuning.confirm         the plan, its trials (``confirm/``),          the ranked table
                       its results
evaluation.evaluate    the held-out evaluation                       the record, the probe, the ranked table
report.tracking        the MLflow handle                             every file above, for the parent run
=====================  ============================================  ==============================================

The names are those of every earlier version: an experiment stored before this module still summarizes and resumes.
"""
from __future__ import annotations

import json

from tune_p7 import storage

RECORD = "tune_p7_search.json"  # tune_p7/search.py's record: space, data, metric, gates, precision, stages ended
PROBE, PROBE_MD = "probe.json", "probe.md"
RANKED, SUMMARY_MD, SUMMARY_HTML = "summary.parquet", "summary.md", "summary.html"
IMPORTANCE = "importance.json"
PLAN, CONFIRMED, CONFIRMED_ARTICLES, CONFIRM_FOLDER = \
    "confirm.json", "confirm.parquet", "confirm_articles.parquet", "confirm"
EVALUATION, EVALUATION_MD = "evaluation.parquet", "evaluation.md"
TRACKING = "tracking.json"  # {uri, experiment, experiment_id, parent_run_id} of the search's MLflow parent run
MLFLOW_DB = "mlflow.db"  # MLflow's default tracking store: SQLite in the experiment folder
JOURNAL = "optuna_journal.log"  # an Optuna search's study: optuna-dashboard opens it
SPACE_COPY = "space.yaml"  # the space file as the search read it (tune_p7.kept_inputs)
TRIAL_RESULTS = "result.json"  # Tune's per-trial result lines, in each trial folder
PLOTS = ("curves.png", "margin_vs_params.png", "r_at_5_vs_params.png")  # report.plots
IMPORTANCE_PLOTS = ("importance.png", "parallel_coordinates.png")  # report.importance
FILES = (RECORD, PROBE, PROBE_MD, RANKED, SUMMARY_MD, SUMMARY_HTML, IMPORTANCE, PLAN, CONFIRMED, CONFIRMED_ARTICLES,
         EVALUATION, EVALUATION_MD, TRACKING, MLFLOW_DB, JOURNAL, SPACE_COPY, TRIAL_RESULTS, *PLOTS, *IMPORTANCE_PLOTS)


class Experiment:
    """One experiment folder. ``Experiment(path)`` or ``Experiment.at(storage_root, name)``."""

    def __init__(self, path: str, *, normalized: bool = False):
        self.path = str(path) if normalized else storage.normalize(str(path))

    @classmethod
    def at(cls, root: str, name: str) -> Experiment:
        """The folder ``name`` in storage ``root`` as Tune names it: ``name`` as given (a symlink or a ``a/b`` name
        is not resolved away from Tune's ROOT/NAME)."""
        return cls(storage.join(storage.normalize(root), name), normalized=True)

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def file(self, name: str) -> str:
        """The path or URI of the file ``name`` (one of this module's names) in the folder."""
        return storage.join(self.path, name)

    def exists(self, name: str | None = None) -> bool:
        """Does the folder (or its file ``name``) exist?"""
        return storage.exists(self.file(name) if name else self.path)

    def _json(self, name: str) -> dict | None:
        return json.loads(storage.read_bytes(self.file(name))) if self.exists(name) else None

    def _write_json(self, name: str, value: dict) -> None:
        storage.write_bytes(self.file(name), json.dumps(value, indent=2).encode())

    def _text(self, name: str) -> str | None:
        return storage.read_bytes(self.file(name)).decode() if self.exists(name) else None

    # ------------------------------------------------------------------------------------------ search record
    def record(self) -> dict | None:
        """The search record (tune_p7/search.py), or None: not a tune_p7 experiment."""
        return self._json(RECORD)

    def write_record(self, record: dict) -> None:
        self._write_json(RECORD, record)

    def write_space_copy(self, text: bytes) -> str:
        """Keep the space file as the search read it; returns the copy's name (the record's ``space_copy``)."""
        storage.write_bytes(self.file(SPACE_COPY), text)
        return SPACE_COPY

    def space_copy(self, record: dict) -> bytes | None:
        """The experiment's copy of its space file (named by the record), or None."""
        name = record.get("space_copy")
        return storage.read_bytes(self.file(name)) if name and self.exists(name) else None

    # ------------------------------------------------------------------------------------------------ probe
    def probe(self) -> dict | None:
        return self._json(PROBE)

    def probe_md(self) -> str | None:
        return self._text(PROBE_MD)

    def write_probe(self, result: dict, md: str) -> None:
        self._write_json(PROBE, result)
        storage.write_bytes(self.file(PROBE_MD), md.encode())

    # ---------------------------------------------------------------------------------------- trial results
    def trial_results(self, trial_dir: str) -> list[dict]:
        """The result lines Tune wrote for the trial folder ``trial_dir``, one JSON object a line; a torn last line
        (a crash mid-write) is skipped."""
        path = storage.join(self.path, trial_dir, TRIAL_RESULTS)
        if not storage.exists(path):
            return []
        rows = []
        for line in storage.read_bytes(path).decode("utf-8", "replace").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows

    def every_trial_results(self) -> dict[str, list[dict]]:
        """{trial folder: its result lines} of every folder here that holds Tune's result lines."""
        import pyarrow.fs as pafs

        fs, root = storage.filesystem(self.path)
        found = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(root))
                       if i.type == pafs.FileType.Directory and not i.base_name.startswith("."))
        return {d: rows for d in found if (rows := self.trial_results(d))}

    # ---------------------------------------------------------------------------------------- ranked table
    def has_ranked(self) -> bool:
        return self.exists(RANKED)

    def ranked(self):
        """summary.parquet: every trial, ranked (report.summary)."""
        return storage.read_parquet(self.file(RANKED))

    def write_summary(self, ranked: bytes, md: str, html: str) -> None:
        storage.write_bytes(self.file(RANKED), ranked)
        storage.write_bytes(self.file(SUMMARY_MD), md.encode())
        storage.write_bytes(self.file(SUMMARY_HTML), html.encode())

    def write_files(self, files: dict[str, bytes]) -> None:
        """Plots (PLOTS, IMPORTANCE_PLOTS) by name."""
        for name, data in files.items():
            storage.write_bytes(self.file(name), data)

    def stored_files(self, names) -> dict[str, bytes]:
        """Those of ``names`` (plots) the folder holds, by name."""
        return storage.read_present(self.path, names)

    def remove_files(self, names) -> None:
        """Delete those of ``names`` (plots) the folder holds."""
        storage.remove_present(self.path, names)

    def importance(self) -> dict | None:
        return self._json(IMPORTANCE)

    def write_importance(self, report: dict) -> None:
        self._write_json(IMPORTANCE, report)

    # -------------------------------------------------------------------------------------------- confirmation
    @property
    def confirm_folder(self) -> str:
        """The confirmation's own Tune experiment (its trials), inside this one."""
        return self.file(CONFIRM_FOLDER)

    def plan(self) -> dict | None:
        """The confirmation's settings and, once chosen, its plan (tuning.confirm); None before."""
        return self._json(PLAN)

    def write_plan(self, plan: dict) -> None:
        self._write_json(PLAN, plan)

    def has_confirmed(self) -> bool:
        return self.exists(CONFIRMED)

    def confirmed(self):
        """The confirmation's per-run table (confirm.parquet)."""
        return storage.read_parquet(self.file(CONFIRMED))

    def confirmed_articles(self):
        """Its per-article table (confirm_articles.parquet), or None when absent (an older experiment)."""
        return storage.read_parquet(self.file(CONFIRMED_ARTICLES)) if self.exists(CONFIRMED_ARTICLES) else None

    def write_confirmed(self, table: bytes, articles: bytes) -> None:
        """The per-article table first: the per-run table's presence means the confirmation is complete."""
        storage.write_bytes(self.file(CONFIRMED_ARTICLES), articles)
        storage.write_bytes(self.file(CONFIRMED), table)

    # -------------------------------------------------------------------------------------------- evaluation
    def evaluation_md(self) -> str | None:
        return self._text(EVALUATION_MD)

    def write_evaluation(self, table: bytes, md: str) -> None:
        storage.write_bytes(self.file(EVALUATION), table)
        storage.write_bytes(self.file(EVALUATION_MD), md.encode())

    # ------------------------------------------------------------------------------------------ tools beside
    def tracking(self) -> dict | None:
        """The MLflow handle of the search's parent run (report.tracking), or None: not tracked."""
        return self._json(TRACKING)

    def write_tracking(self, handle: dict) -> None:
        self._write_json(TRACKING, handle)

    def journal(self) -> str | None:
        """The local path of an Optuna search's study journal; None on a storage URI (JournalStorage needs a
        local file)."""
        return None if storage.is_uri(self.path) else self.file(JOURNAL)
