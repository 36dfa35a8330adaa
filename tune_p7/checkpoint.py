"""Checkpoint files: a folder with ``state.pt`` (tensors and plain values only) and ``metrics.json``.

Loading never executes code from the file: torch.load(weights_only=True).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch

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


def stored(fs, trial_path: str) -> list[str]:
    """Paths of the whole checkpoints (``checkpoint_*`` folders holding both files) in a trial folder on a
    pyarrow filesystem, oldest first (Tune numbers them in order, zero-padded)."""
    import pyarrow.fs as pafs

    folders = [i.path for i in fs.get_file_info(pafs.FileSelector(trial_path, allow_not_found=True))
               if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_")]
    return sorted(f for f in folders if all(i.type == pafs.FileType.File
                                            for i in fs.get_file_info([f"{f}/{STATE}", f"{f}/{METRICS}"])))
