"""Look at the data before spending compute: ``python -m tune_p7.probe DATA [--context-length K]``.

For each held-out split: the forward signal Delta = mean cos(ctx[-1], next) - cos(ctx[-1], ctx[-2]), the mean
cosine of adjacent vs random chunk pairs, and three cheap predictors scored with the trials' metrics on the
same bank: DIRECT (copy ctx[-1]), centroid (mean of the context) and a closed-form ridge regression from the
flattened context to the next vector, fitted on train.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tune_p7 import cli
from tune_p7.config import P7Config
from tune_p7.data import P7Data, Split, SplitTensors, load
from tune_p7.loop import Evaluator
from tune_p7.model import Prediction

SHOWN = ("cos_next", "cos_prev", "margin", "cos_anchor", "r_at_5", "mrr_at_10")


class Ridge(nn.Module):
    """next ~ normalize(flatten(context) @ W): W = (X^T X + alpha I)^-1 X^T Y on the train windows."""

    def __init__(self, train: Split, k: int, alpha_scale: float = 1e-2, block: int = 8192):
        super().__init__()
        st = SplitTensors(train, k)
        p = k * train.dim
        xtx = torch.zeros(p, p, dtype=torch.float64)
        xty = torch.zeros(p, train.dim, dtype=torch.float64)
        for i in range(0, len(st), block):
            b = st.batch(torch.arange(i, min(i + block, len(st))))
            x = b.context.reshape(len(b.next), -1).double()
            xtx += x.T @ x
            xty += x.T @ b.next.double()
        alpha = alpha_scale * xtx.diagonal().mean()  # scale-aware regularisation
        self.w = nn.Parameter(torch.linalg.solve(xtx + alpha * torch.eye(p, dtype=torch.float64), xty).float(),
                              requires_grad=False)

    def forward(self, context: torch.Tensor) -> Prediction:
        q = F.normalize(context.reshape(len(context), -1) @ self.w, dim=-1)
        return Prediction(q, q, torch.tensor(1.0))


def pair_cosines(split: Split, seed: int = 0) -> dict[str, float]:
    """Mean cos of chunks adjacent inside an article vs of random pairs from different articles, and Delta."""
    x = torch.from_numpy(split.chunks).float()
    article = np.repeat(np.arange(len(split.offsets) - 1), np.diff(split.offsets))
    same = article[1:] == article[:-1]
    adj = (x[1:] * x[:-1]).sum(-1)[torch.from_numpy(same)]
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(x), 20000), rng.integers(0, len(x), 20000)
    keep = torch.from_numpy(article[i] != article[j])
    rnd = (x[i] * x[j]).sum(-1)[keep]
    # Delta for every chunk t with t-1 and t+1 in its article
    mid = torch.from_numpy(np.flatnonzero(same[:-1] & same[1:]) + 1)
    delta = (x[mid] * x[mid + 1]).sum(-1) - (x[mid] * x[mid - 1]).sum(-1)
    return {"delta": float(delta.mean()) if len(mid) else float("nan"), "adjacent_cos": float(adj.mean()),
            "random_cos": float(rnd.mean()) if len(rnd) else float("nan")}


def probe(data: P7Data, k: int = 5) -> dict:
    """The probe of every held-out split of ``data`` at context length k (a JSON-able dict)."""
    cfg = P7Config(context_length=k, precision="fp32")
    ridge = Ridge(data.train, k)
    out = {"data": data.source, "context_length": k, "splits": {}}
    for name in ("val", "ood"):
        split = getattr(data, name)
        if split is None:
            continue
        ev = Evaluator(split, cfg)
        r = ev(ridge, bf16=False)
        base = ev.baselines
        out["splits"][name] = {
            **pair_cosines(split), "windows": len(ev.st), "bank": len(ev.bank),
            "baselines": {
                "direct": {"cos_next": base["direct_cos_next"], "cos_prev": 1.0, "margin": base["direct_margin"],
                           **{k2.removeprefix("direct_"): v for k2, v in base.items() if k2.startswith("direct_r")
                              or k2.startswith("direct_mrr")}},
                "centroid": {"cos_anchor": 1.0, **{k2.removeprefix("centroid_"): v for k2, v in base.items()
                                                   if k2.startswith("centroid_")}},
                "ridge": {k2: r[k2] for k2 in ("cos_next", "cos_prev", "margin", "cos_anchor", "r_at_1", "r_at_5",
                                               "r_at_10", "mrr_at_10")},
            }}
    return out


def markdown(result: dict) -> str:
    """The probe as a Markdown section."""
    lines = [f"## Data probe (context length {result['context_length']})", ""]
    for name, s in result["splits"].items():
        lines += [f"**{name}**: {s['windows']} windows, bank of {s['bank']} chunks. Forward signal "
                  f"Delta = {s['delta']:+.4f}; adjacent chunks cos {s['adjacent_cos']:.3f} vs random "
                  f"{s['random_cos']:.3f}.", "",
                  "| predictor | " + " | ".join(SHOWN) + " |", "|---" * (len(SHOWN) + 1) + "|"]
        for b, m in s["baselines"].items():
            lines.append(f"| {b} | " + " | ".join(f"{m[c]:.3f}" if c in m else "" for c in SHOWN) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tune_p7.probe", description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="article store, NPZ train file or folder")
    p.add_argument("--context-length", type=int, default=5)
    p.add_argument("--json", help="also write the probe as JSON here")
    a = p.parse_args(argv)
    data = load(a.data)
    data.check_context(a.context_length)
    result = probe(data, a.context_length)
    print(markdown(result))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    cli.run(main)
