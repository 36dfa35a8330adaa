"""Predict the next chunk vector with this exported P7 ranker: python example.py [CONTEXT.npy [OUT.npy]]

CONTEXT.npy: (K, D) or (B, K, D) chunk embeddings, oldest first (default: random unit vectors). Needs the tune_p7
package (pip install -e <repo>)."""
import json, sys
from pathlib import Path

import numpy as np

from tune_p7.evaluation.export import load_exported, predict

here = Path(__file__).resolve().parent
model, cfg = load_exported(here)  # P7Config.from_dict(config.json) + build_model + model.pt
dim = json.loads((here / "config.json").read_text())["dim"]
if len(sys.argv) > 1:
    context = np.load(sys.argv[1])
else:
    context = np.random.default_rng(0).standard_normal((cfg.context_length, dim))
pred = predict(model, context)  # unit vector(s): (D,) or (B, D)
print(f"context {context.shape} -> prediction {pred.shape}, norm {np.round(np.linalg.norm(pred, axis=-1), 4)}")
if len(sys.argv) > 2:
    np.save(sys.argv[2], pred)
