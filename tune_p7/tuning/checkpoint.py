"""Checkpoint files: a folder with ``state.pt`` (tensors and plain values only) and ``metrics.json``.

Loading never executes code from the file: torch.load(weights_only=True).
"""
from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from tune_p7 import storage

UNLOADABLE = (OSError, RuntimeError, EOFError, pickle.UnpicklingError)  # a checkpoint cut short, torn

STATE, METRICS = "state.pt", "metrics.json"


def json_safe(v):
    """``v`` with NaN/Inf floats as None and numpy scalars as Python ones (nested dicts too), for strict JSON."""
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, (np.integer, np.bool_)):
        return v.item()
    return v


def save(folder, state: dict, metrics: dict, durable: bool = True) -> None:
    """Write state and metrics into ``folder``; each file goes to a temporary name first, then is renamed,
    so a crash mid-write never leaves a half-written file under the real name. ``durable``: fsync each file
    before the rename; False for a scratch folder that is copied elsewhere and deleted right after (a Tune
    report): there the fsync only cost time (~0.05-0.2 s for the default model's 164 MB state)."""
    folder = Path(folder)
    for name, write in ((STATE, lambda f: torch.save(state, f)),
                        (METRICS, lambda f: f.write(json.dumps(json_safe(metrics)).encode()))):
        tmp = folder / (name + ".tmp")
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, folder / name)


def load(folder) -> dict:
    return torch.load(Path(folder) / STATE, map_location="cpu", weights_only=True)


def load_metrics(folder) -> dict:
    return json.loads((Path(folder) / METRICS).read_text())


def folders(fs, trial_path: str) -> list[str]:
    """Paths of the ``checkpoint_*`` folders in a trial folder on a pyarrow filesystem, whole or not."""
    import pyarrow.fs as pafs

    return [i.path for i in fs.get_file_info(pafs.FileSelector(trial_path, allow_not_found=True))
            if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_")]


def stored(fs, trial_path: str) -> list[str]:
    """Paths of the whole checkpoints (``checkpoint_*`` folders holding both files) in a trial folder on a
    pyarrow filesystem, oldest first (Tune numbers them in order, zero-padded)."""
    import pyarrow.fs as pafs

    return sorted(f for f in folders(fs, trial_path)
                  if all(i.type == pafs.FileType.File for i in fs.get_file_info([f"{f}/{STATE}", f"{f}/{METRICS}"])))


def stored_metrics(fs, trial_path: str) -> list[tuple[str, dict]]:
    """(path, metrics) of each whole checkpoint in a trial folder whose metrics.json reads, oldest first."""
    found = [(path, read_metrics(fs, path)) for path in stored(fs, trial_path)]
    return [(p, m) for p, m in found if m is not None]  # a torn metrics.json: not a usable checkpoint


def read_metrics(fs, path: str) -> dict | None:
    """The metrics of checkpoint folder ``path`` on pyarrow filesystem ``fs``; None when missing or torn."""
    try:
        with fs.open_input_stream(f"{path}/{METRICS}") as f:
            return json.loads(f.read())
    except (OSError, json.JSONDecodeError):
        return None


def resume_from(fs, named: str) -> tuple[dict, list[dict]]:
    """Where a restored trial goes on: (the state of the newest loadable checkpoint, by epoch, of ``named``'s lineage in
    the trial folder that holds ``named``, the checkpoint Tune restored; the metrics of every whole checkpoint of that
    lineage from ``named``'s epoch up to that one, oldest first). ``fs``: the pyarrow filesystem of the paths.

    Tune writes each result and checkpoint as they come but snapshots its experiment state only every few seconds:
    after a killed driver the checkpoint it restores can be epochs older than the newest one the trial had stored
    (resuming from it would train finished epochs again), and the last results before the kill can be missing
    from result.json while their checkpoints exist (the trial reports them again). A checkpoint cut short by the
    kill does not load and is passed over. Lineage: under PBT a trial that exploited another one's checkpoint goes
    on from an earlier epoch with other weights; its folder then also holds checkpoints of its former lineage, some
    with later epochs: only checkpoints whose metrics carry ``named``'s ``lineage`` are candidates.
    """
    found = sorted(stored_metrics(fs, named.rsplit("/", 1)[0]), key=lambda pm: pm[1].get("epoch", 0))
    mine = next((m for p, m in found if p == named), None)
    if mine is not None:
        found = [(p, m) for p, m in found if m.get("lineage") == mine.get("lineage")]
    start = mine.get("epoch", 0) if mine is not None else 0
    since = [(p, m) for p, m in found if m.get("epoch", 0) >= start]
    error = None
    for i in range(len(since) - 1, -1, -1):
        try:
            return load_from(fs, since[i][0]), [m for _, m in since[:i + 1]]
        except UNLOADABLE as exc:
            error = exc
    raise error or FileNotFoundError(f"no whole checkpoint next to {named}")


def unregistered(fs, trial_path: str, trial_id: str) -> str | None:
    """Where a trial that Tune starts without a checkpoint goes on (``resume_from``), if its folder holds whole
    checkpoints of its own: the oldest of its newest lineage; else None. A driver killed after a trial stored its
    first checkpoint but before Tune's saved state recorded it restarts the trial without one, and training from
    scratch would train and report those epochs twice."""
    own = [(p, m) for p, m in stored_metrics(fs, trial_path) if m.get("trial_id") == trial_id]
    if not own:
        return None
    lineage = max(own, key=lambda pm: pm[1].get("epoch", 0))[1].get("lineage")
    return min((pm for pm in own if pm[1].get("lineage") == lineage), key=lambda pm: pm[1].get("epoch", 0))[0]


def discard_all(fs, trial_path: str) -> None:
    """Delete every checkpoint folder of a trial whose checkpoints Tune's state knows none of: its new ones then go
    to fresh folders (Tune numbers them from 0 again) instead of over the old ones, which a kill mid-copy would
    leave torn, and none is left that ``num_to_keep`` would never delete."""
    for folder in folders(fs, trial_path):
        fs.delete_dir(folder)


def load_from(fs, path: str) -> dict:
    """The state of the checkpoint folder ``path`` on pyarrow filesystem ``fs`` (copied to a local folder first)."""
    from ray import tune  # here, not at import: search.py imports this module before it may import ray

    with tune.Checkpoint(path, filesystem=fs).as_directory() as d:
        return load(d)


def restore_deleted(exp: str) -> list[tuple[str, str]]:
    """Make every trial's latest checkpoint in Tune's experiment state exist again; returns (trial, source) pairs.

    Tune deletes a checkpoint beyond ``num_to_keep`` as soon as a newer one is registered, but saves its
    experiment state only every few seconds: a driver killed in between leaves a state whose latest checkpoint
    is gone, and ``Tuner.restore`` then fails that trial ("Could not recover from checkpoint"). The first whole
    checkpoint after it on storage is copied to the missing path; the trial then goes on from the newest one it
    stored (resume_from). Older checkpoints the state keeps and storage lost get an empty stand-in.
    """
    import pyarrow.fs as pafs
    from ray import tune

    repaired = []
    for trial in tune.ExperimentAnalysis(exp).trials:
        ckpt = trial.checkpoint
        _stand_in_for_older(trial, ckpt)
        if ckpt is None or ckpt.filesystem.get_file_info(ckpt.path).type != pafs.FileType.NotFound:
            continue
        fs = ckpt.filesystem
        kept = stored(fs, ckpt.path.rsplit("/", 1)[0])
        # Checkpoints register in order and the named one was deleted when a later one registered, so the first
        # later one on storage is registered too (its result recorded); a still later one may have been in flight
        later = [p for p in kept if p > ckpt.path]
        source = later[0] if later else kept[-1] if kept else None
        if source:
            fs.create_dir(ckpt.path)
            pafs.copy_files(source, ckpt.path, source_filesystem=fs, destination_filesystem=fs)
            repaired.append((trial.trial_id, source))
    return repaired


def _stand_in_for_older(trial, latest) -> None:
    """An empty folder at each missing older checkpoint Tune's state still keeps: Tune deletes it when a newer one
    registers, and deleting a path that is gone raises inside Tune ("Error handling checkpoint ... Path not found",
    with a traceback on the console, and the bookkeeping after it skipped). Never loaded: not a whole checkpoint."""
    import pyarrow.fs as pafs

    for result in trial.run_metadata.checkpoint_manager._checkpoint_results:
        ck = result.checkpoint
        if latest is not None and ck.path == latest.path:
            continue
        if ck.filesystem.get_file_info(ck.path).type == pafs.FileType.NotFound:
            ck.filesystem.create_dir(ck.path)


def remove_unknown_trials(exp: str) -> list[str]:
    """Delete every trial folder of ``exp`` that Tune's experiment state does not list; returns their names.

    Tune makes a trial's folder when it starts the trial, but lists the trial in its experiment state only at its
    next save (forced when a trial's checkpoint registers, else every 10 s or more): a driver killed in between
    leaves a folder that the resumed run never reads (its searcher, restored from that same save, suggests a trial in
    its place). It happens with fresh and reused workers alike; a reused one starts its next trial at once. On a
    Ray that outlived the killed driver, the resumed driver reuses that driver's staging folder (in the Ray session's
    folder, on this node) and uploads what it holds: a copy of such a trial, or one the killed driver had not yet
    synced to the storage at all; those go too.
    """
    import shutil

    import pyarrow.fs as pafs
    from ray import tune

    trials = tune.ExperimentAnalysis(exp).trials
    known = {t.storage.trial_dir_name for t in trials}
    prefixes = tuple({f"{t.trainable_name}_" for t in trials})  # Tune's folder names: <trainable>_<trial id>_...
    staged = {Path(t.storage.experiment_driver_staging_path) for t in trials}  # restored trials keep their driver's

    def unknown(names) -> set[str]:
        return {n for n in names if prefixes and n.startswith(prefixes) and n not in known}

    fs, root = storage.filesystem(exp)
    stored = unknown(i.base_name for i in fs.get_file_info(pafs.FileSelector(root)) if i.type == pafs.FileType.Directory)
    # a trial the killed driver made in its staging folder but had not synced yet is uploaded by the resumed driver
    local = {n: folder for folder in staged if folder.is_dir() for n in unknown(d.name for d in folder.iterdir())}
    for name in stored:
        fs.delete_dir(f"{root}/{name}")
    for name, folder in local.items():
        shutil.rmtree(folder / name, ignore_errors=True)
    return sorted(stored | set(local))


def restore_tuner(exp: str, trainable, label: str):
    """``Tuner.restore`` of the interrupted experiment ``exp`` (resuming errored trials), after restore_deleted and
    remove_unknown_trials; prints one line per repaired or removed trial, prefixed by ``label``."""
    from ray import tune

    for trial_id, source in restore_deleted(exp):
        print(f"  {label + ':':<10} trial {trial_id}: Tune's state named a deleted checkpoint, resuming from {source}")
    for name in remove_unknown_trials(exp):
        print(f"  {label + ':':<10} removed {name}: started after Tune's last saved state, which does not know it")
    return tune.Tuner.restore(exp, trainable, resume_errored=True)
