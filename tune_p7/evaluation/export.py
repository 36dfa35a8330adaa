"""The chosen model as a self-contained folder (``evaluate --export DIR``), and how to load and use one.

The folder: ``model.pt`` (state dict, loads with ``torch.load(weights_only=True)``), ``config.json`` (the P7Config
keys and ``dim``), ``metrics.json`` (held-out and val metrics) and ``example.py`` (the template
``tune_p7/evaluation/templates/example.py``: ``python DIR/example.py [CONTEXT.npy [OUT.npy]]``).
"""
from __future__ import annotations

import io
import json
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tune_p7 import storage
from tune_p7.core import verdicts as V
from tune_p7.core.config import P7Config
from tune_p7.core.model import build_model
from tune_p7.evaluation.selection import Candidate
from tune_p7.tuning import checkpoint


def load_exported(folder) -> tuple[nn.Module, P7Config]:
    """The model (eval mode, CPU) and config of a folder written by ``--export``."""
    folder = Path(folder)
    values = json.loads((folder / "config.json").read_text())
    dim = values.pop("dim")
    cfg = P7Config.from_dict(values, source=str(folder / "config.json"))
    model = build_model(cfg, dim)
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    return model.eval(), cfg


@torch.inference_mode()
def predict(model: nn.Module, context, bf16: bool = False) -> np.ndarray:
    """The anchored unit prediction of the next vector from context(s) (K, D) or (B, K, D), oldest first.

    Context rows are L2-normalised first, as the training data was. Returns float32 (D,) or (B, D).
    """
    x = torch.as_tensor(np.asarray(context, dtype=np.float32))
    single = x.ndim == 2
    if single:
        x = x[None]
    dim = model.head[-1].out_features
    if x.ndim != 3 or x.shape[-1] != dim:
        raise ValueError(f"context must be (K, {dim}) or (B, K, {dim}), got {tuple(np.shape(context))}")
    x = F.normalize(x, dim=-1)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        q = model(x).q.float()
    q = q.numpy()
    return q[0] if single else q


def export(folder: str, c: Candidate, dim: int, held_out: dict, split: str, info: dict) -> None:
    """Write the chosen model as a self-contained folder (path or URI)."""
    folder = storage.normalize(folder)
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in c.state["model"].items()}, buf)
    val = {k: v for k, v in c.val.items() if not isinstance(v, (dict, list))}
    files = {
        "model.pt": buf.getvalue(),
        "config.json": json.dumps({**c.cfg.to_dict(), "dim": dim}, indent=2).encode(),
        "metrics.json": json.dumps(checkpoint.json_safe({
            **info, "trial_id": c.trial_id, "checkpoint": c.checkpoint, "epoch": c.val.get("epoch"),
            "split": split, "held_out": held_out,
            "val": {**val, "verdict": V.verdict(val), "deploy_ok": V.deploy_ok(val)}}), indent=2).encode(),
        "example.py": resources.files("tune_p7.evaluation").joinpath("templates/example.py").read_bytes(),
    }
    for name, data in files.items():
        storage.write_bytes(storage.join(folder, name), data)
