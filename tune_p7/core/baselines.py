"""Reference predictors of the data probe, and the search's gates and verdicts run on them.

- ``Ridge``: a closed-form linear map from the flattened context to the next vector, fitted on train.
- the oracle: the true next chunk used as the prediction (raw = itself). It bounds what any model can reach; where
  the search's gates would stop it or the verdict fails it, the gates and verdicts do not fit the data, and
  ``oracle_warnings`` says so before any compute is spent.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tune_p7.core import metrics as M
from tune_p7.core import verdicts as V
from tune_p7.core.gates import Gates, gate
from tune_p7.core.loop import Evaluator
from tune_p7.core.model import Prediction
from tune_p7.data.batches import SplitTensors
from tune_p7.data.loading import Split

ORACLE = ("cos_next", "cos_prev", "margin", "cos_anchor")
ESCAPE_SUGGESTED = 0.1  # the seed's escaped predictions sat at cos ~0.04 to both neighbours


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


def oracle(ev: Evaluator) -> dict[str, float]:
    """The trials' cosine metrics (means over ev's windows) of the true next chunk as the prediction: cos_next = 1,
    cos_prev = cos(next, ctx[-1]), margin = 1 - cos_prev, cos_anchor = cos(next, normalize(mean context))."""
    out = ev.gather(lambda b, targets: M.cosines(b.next, b.next, b.context, b.next))
    return {k: float(out[k].mean()) for k in ORACLE}


def judge(m: dict[str, float], gates: Gates, warmup_epochs: int) -> dict[str, str | None]:
    """{gate, verdict} of val metrics ``m`` as the search judges a trial's epoch. The gate is asked at epoch
    warmup_epochs + grace_epochs + 1, the first epoch at which every gate applies (the margin gate waits out
    warm-up and grace), so a predictor whose metrics do not change with training is judged by all of them."""
    epoch = warmup_epochs + gates.grace_epochs + 1
    return {"gate": gate({**m, "epoch": epoch}, gates, warmup_epochs), "verdict": V.verdict(m)}


def oracle_warnings(split: str, o: dict, gates: Gates, gated: bool) -> list[str]:
    """One ``warning:`` line for each way the search would misjudge the oracle ``o`` (its metrics and judge()'s
    gate and verdict) on ``split``: a gate that stops it (only when ``gated``: the gates watch val alone) and a
    FAIL verdict, each naming the gate or threshold and the oracle's value."""
    head = f"warning: on {split} the true next chunk itself"
    lines = []
    if gated and o["gate"] == "drift":
        lines.append(f"{head} would be stopped by the drift gate (oracle cos_anchor {o['cos_anchor']:+.2f} < "
                     f"{gates.drift:g}): the gates assume the next chunk lies near its context centroid; consider "
                     f"gates: {{drift: -1.0, escape: {ESCAPE_SUGGESTED:g}}} and a wider lambda range "
                     "(lambda_min: 0.0, lambda_max: 1.0)")
    elif gated and o["gate"] == "escape":
        lines.append(f"{head} would be stopped by the escape gate (oracle cos_next {o['cos_next']:.2f} and cos_prev "
                     f"{o['cos_prev']:+.2f} < {gates.escape:g}): lower gates.escape")
    elif gated and o["gate"] == "margin":
        lines.append(f"{head} would be stopped by the margin gate (oracle margin {o['margin']:+.2f} < "
                     f"{gates.margin:g}): consecutive chunks are nearly identical here, so only a prediction that "
                     "overshoots the next chunk, away from ctx[-1], clears it; consider a lower gates.margin")
    if o["verdict"] == "FAIL":
        why = " (they assume the next chunk lies near its context centroid)" \
            if not o["cos_anchor"] >= V.MARGINAL["cos_anchor"] else ""
        lines.append(f"{head} gets verdict FAIL (oracle {', '.join(V.fail_reasons(o))}): a model that predicts the "
                     f"next chunk exactly fails the verdict's thresholds here{why}; judge trials by margin and by "
                     "R@5 / MRR@10 against DIRECT")
    return lines
