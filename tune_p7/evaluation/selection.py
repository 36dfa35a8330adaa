"""Which checkpoints the held-out evaluation takes, and which model it chooses.

The top K trials of the summary by rank, each at its best checkpoint (the highest finite val margin among the
checkpoints Tune kept), loaded and checked against the data. The chosen model is the best candidate by the summary's
ranking key (``tune_p7.core.ranking.ranking_key``) on its checkpoint's val metrics: never on the held-out split.
"""
from __future__ import annotations

import math
import pickle
import tempfile
from dataclasses import dataclass

import pandas as pd
import pyarrow.fs as pafs
from torch import nn

from tune_p7 import storage
from tune_p7.core.config import P7Config
from tune_p7.core.model import build_model
from tune_p7.core.ranking import ranked_index
from tune_p7.data.loading import Split
from tune_p7.errors import InputError, one_line
from tune_p7.experiment import Experiment
from tune_p7.tuning import checkpoint


@dataclass
class Candidate:
    """One trial to evaluate: its summary row, its best checkpoint and that checkpoint's loaded state."""
    trial_id: str
    rank: int
    checkpoint: str  # folder path or URI
    val: dict  # the checkpoint's metrics.json: val metrics of that epoch
    state: dict | None = None
    cfg: P7Config | None = None


def best_checkpoint(exp: str, trial_dir: str) -> tuple[str, dict] | None:
    """(folder, metrics) of the trial's checkpoint with the highest finite val margin; None if it has none."""
    best = None
    fs, path = storage.filesystem(storage.join(exp, trial_dir))
    for found, m in checkpoint.stored_metrics(fs, path):
        folder = storage.join(exp, trial_dir, found.rsplit("/", 1)[1])
        margin = m.get("margin")
        if not isinstance(margin, (int, float)) or not math.isfinite(margin):
            continue
        if best is None or margin > best[1]["margin"]:
            best = (folder, m)
    return best


def load_state(folder: str) -> dict:
    """A checkpoint's state.pt (weights_only); a URI's folder is downloaded to a temporary folder first."""
    try:
        if not storage.is_uri(folder):
            return checkpoint.load(folder)
        fs, path = storage.filesystem(folder)
        with tempfile.TemporaryDirectory(prefix="tune_p7_ckpt_") as tmp:
            pafs.copy_files(path, tmp, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
            return checkpoint.load(tmp)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise InputError(folder, f"cannot read the checkpoint ({type(exc).__name__}: "
                                 f"{one_line(exc)})") from None


def trained_dim(model_state: dict) -> int | None:
    """The vector dimension a state dict was trained for: the output size of the head's last layer."""
    w = model_state.get("head.3.weight")
    return int(w.shape[0]) if w is not None else None


def read_summary(exp: str) -> pd.DataFrame:
    stored = Experiment(exp)
    if not stored.has_ranked():
        from tune_p7.report.summary import summarize

        print(f"no summary.parquet in {exp}: summarizing first", flush=True)
        summarize(exp)
    return stored.ranked()


def choose_candidates(exp: str, summary: pd.DataFrame, top: int) -> tuple[list[Candidate], list[str]]:
    """The top ``top`` trials by rank that did not error and have a checkpoint with a finite margin; notes on
    trials skipped (an errored trial's earlier checkpoints are no candidate: its configuration diverges)."""
    out, skipped = [], []
    for _, row in summary.sort_values("rank").iterrows():
        if len(out) == top:
            break
        if row.get("status") == "errored":
            skipped.append(f"{row['trial_id']} (rank {row['rank']}): errored ({row.get('error')})")
            continue
        trial_dir = row.get("trial_dir")
        found = best_checkpoint(exp, trial_dir) if isinstance(trial_dir, str) and trial_dir else None
        if found is None:
            skipped.append(f"{row['trial_id']} (rank {row['rank']}): no checkpoint with a finite val margin")
            continue
        out.append(Candidate(str(row["trial_id"]), int(row["rank"]), found[0], found[1]))
    if not out:
        raise InputError(exp, "no trial has a checkpoint to evaluate")
    return out, skipped


def check_fits(c: Candidate, split: Split, data_source: str) -> None:
    """Raise a one-line InputError unless the checkpoint's dimension and context length fit the split."""
    dim = trained_dim(c.state["model"])
    if dim is not None and dim != split.dim:
        raise InputError(data_source, f"vectors of dimension {split.dim}, but trial {c.trial_id} was trained on "
                                      f"dimension {dim} ({c.checkpoint})")
    try:
        split.windows(c.cfg.context_length)
    except InputError as err:
        raise InputError(data_source, f"trial {c.trial_id} needs context length {c.cfg.context_length}: "
                                      f"{err.problem}") from None


def build(c: Candidate, dim: int) -> nn.Module:
    model = build_model(c.cfg, dim)
    try:
        model.load_state_dict(c.state["model"])
    except RuntimeError as exc:
        raise InputError(c.checkpoint, "the weights do not fit the model of the checkpoint's config "
                                       f"({one_line(exc)})") from None
    return model.eval()


def chosen_index(df: pd.DataFrame):
    """The index of the chosen trial row of an evaluation table: the ranking key on the val columns only."""
    return ranked_index(df[df["kind"] == "trial"], "val_deploy_ok", "val_verdict", "val_margin")[0]
