"""Reference predictors (every predictor that needs no search) and the search's gates and verdicts run on them.

- ``CopyLast`` (DIRECT: the last context chunk) and ``Centroid`` (the context's normalised mean): the evaluation's
  untrained references.
- ``Ridge``: a closed-form linear map from the flattened context to the next vector, fitted on train.
- ``KnnSuccessor``: the train windows whose contexts are nearest the query's vote with their own next chunks.
- ``references(train, val, k)``: both, fitted on train with their hyperparameters chosen on val (``choose``).
- the oracle: the true next chunk used as the prediction (raw = itself). It bounds what any model can reach; where
  the search's gates would stop it or the verdict fails it, the gates and verdicts do not fit the data, and
  ``oracle_warnings`` says so before any compute is spent.
"""
from __future__ import annotations

from typing import Callable, Hashable

import torch
import torch.nn.functional as F
from torch import nn

from tune_p7.core import metrics as M
from tune_p7.core import verdicts as V
from tune_p7.core.config import P7Config
from tune_p7.core.gates import Gates, gate
from tune_p7.core.loop import Evaluator
from tune_p7.core.model import Prediction
from tune_p7.data.batches import SplitTensors
from tune_p7.data.loading import Split

ORACLE = ("cos_next", "cos_prev", "margin", "cos_anchor")
ESCAPE_SUGGESTED = 0.1  # the seed's escaped predictions sat at cos ~0.04 to both neighbours
RIDGE_ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # alpha_scale grid (alpha = alpha_scale * mean diag X^T X)
KNN_NEIGHBOURS = (1, 3, 10, 30, 100)
KNN_TEMPERATURES = (None, 0.1, 0.03)  # None: a uniform vote; T: softmax(similarity / T) over the neighbours
CHOICE_WINDOWS = 4096  # val windows a choice scores (a fixed seeded subset of a bigger split)
CRITERION = "val R@5, then val MRR@10"
BLOCK_CELLS = 1 << 24  # floats in one block of the kNN search (train keys and query similarities)


class CopyLast(nn.Module):
    """DIRECT: ctx[-1] as the prediction."""

    def forward(self, context: torch.Tensor) -> Prediction:
        q = context[:, -1].float()
        return Prediction(q, q, torch.tensor(0.0))


class Centroid(nn.Module):
    """The normalised mean of the context as the prediction."""

    def forward(self, context: torch.Tensor) -> Prediction:
        q = F.normalize(context.float().mean(1), dim=-1)
        return Prediction(q, q, torch.tensor(0.0))


class RidgeMoments:
    """X^T X (p, p) and X^T Y (p, D), float64, of the train windows at context length k: X (N, p = kD) the flattened
    contexts, Y (N, D) the next chunks, accumulated in blocks of windows. Every alpha's closed form reuses them, and
    each is solved once (the solves dominate the cost: p = 1920 at K = 5, D = 384)."""

    def __init__(self, train: Split, k: int, block: int = 8192):
        st = SplitTensors(train, k)
        p = k * train.dim
        self.xtx = torch.zeros(p, p, dtype=torch.float64)
        self.xty = torch.zeros(p, train.dim, dtype=torch.float64)
        for i in range(0, len(st), block):
            b = st.batch(torch.arange(i, min(i + block, len(st))))
            x = b.context.reshape(len(b.next), -1).double()
            self.xtx += x.T @ x
            self.xty += x.T @ b.next.double()
        self.solved: dict[float, torch.Tensor] = {}

    def solve(self, alpha_scale: float) -> torch.Tensor:
        """W = (X^T X + alpha I)^-1 X^T Y (p, D) float32, alpha = alpha_scale * mean(diag X^T X): scale-aware."""
        if alpha_scale not in self.solved:
            alpha = alpha_scale * self.xtx.diagonal().mean()
            a = self.xtx + alpha * torch.eye(len(self.xtx), dtype=torch.float64)
            # symmetric positive definite (alpha > 0): Cholesky, a quarter faster than LU (docs/measurements.md);
            # LU where rounding leaves it not numerically positive definite
            factor, info = torch.linalg.cholesky_ex(a)
            w = torch.cholesky_solve(self.xty, factor) if info == 0 else torch.linalg.solve(a, self.xty)
            self.solved[alpha_scale] = w.float()
        return self.solved[alpha_scale]


class Ridge(nn.Module):
    """next ~ normalize(flatten(context) @ W): W = (X^T X + alpha I)^-1 X^T Y on the train windows."""

    def __init__(self, train: Split, k: int, alpha_scale: float = 1e-2, moments: RidgeMoments | None = None):
        super().__init__()
        self.alpha_scale = alpha_scale
        self.choice: dict | None = None  # how tuned_ridge chose alpha_scale on val
        w = (moments if moments is not None else RidgeMoments(train, k)).solve(alpha_scale)
        self.w = nn.Parameter(w, requires_grad=False)

    @property
    def hyperparameters(self) -> dict:
        return {"alpha_scale": self.alpha_scale}

    @staticmethod
    def predict(context: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """normalize(flatten(context) @ w): context (B, K, D), w (KD, D) -> (B, D)."""
        return F.normalize(context.reshape(len(context), -1) @ w, dim=-1)

    def forward(self, context: torch.Tensor) -> Prediction:
        q = self.predict(context, self.w)
        return Prediction(q, q, torch.tensor(1.0))


class KnnSuccessor(nn.Module):
    """next ~ normalize(sum_i w_i next_i) over the n train windows whose contexts are nearest the query's.

    sim(query, window) = (1/K) sum_j q_j . c_j over the K context positions: with unit chunks, the cosine of the
    two normalized K*D concatenations. The n most similar train windows vote with their own next chunk, weighted
    w_i = 1/n (``temperature`` None) or softmax_i(sim_i / temperature). The search is exhaustive, one matmul per
    block of train windows whose keys are gathered from the split's chunk matrix (no (N, K*D) key matrix is kept):
    memory stays within BLOCK_CELLS floats a block for any store.
    """

    def __init__(self, train: Split, k: int, neighbours: int = 10, temperature: float | None = None,
                 block_cells: int = BLOCK_CELLS):
        super().__init__()
        st = SplitTensors(train, k)
        self.chunks, self.windows = st.chunks, st.windows  # the train split's own arrays (zero-copy)
        self.neighbours, self.temperature, self.block_cells = neighbours, temperature, block_cells
        self.choice: dict | None = None  # how tuned_knn chose neighbours and temperature on val

    @property
    def hyperparameters(self) -> dict:
        return {"neighbours": self.neighbours, "weighting": "uniform" if self.temperature is None else "softmax",
                "temperature": self.temperature}

    def search(self, context: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(similarities (B, n'), next chunks (B, n', D)) of the n' = min(n, N) train windows most similar to each
        context (B, K, D), most similar first."""
        b, k, d = context.shape
        q = context.reshape(b, k * d).float() / k
        best_s, best_i = q.new_empty(b, 0), torch.empty(b, 0, dtype=torch.long)
        step = max(self.block_cells // (k * d + b), 1)  # windows a block: its keys (step, kD), sims (B, step)
        for i in range(0, len(self.windows), step):
            rows = self.windows[i:i + step, :k]
            s = q @ self.chunks[rows].reshape(len(rows), k * d).float().T
            top = s.topk(min(n, s.shape[1]), dim=1)
            s, idx = torch.cat([best_s, top.values], 1), torch.cat([best_i, top.indices + i], 1)
            top = s.topk(min(n, s.shape[1]), dim=1)
            best_s, best_i = top.values, idx.gather(1, top.indices)
        return best_s, self.chunks[self.windows[best_i, -1]].float()

    @staticmethod
    def vote(sims: torch.Tensor, nxt: torch.Tensor, neighbours: int, temperature: float | None) -> torch.Tensor:
        """normalize(sum_i w_i nxt_i) over the first ``neighbours`` columns: sims (B, n), nxt (B, n, D) -> (B, D)."""
        s, x = sims[:, :neighbours], nxt[:, :neighbours]
        w = torch.ones_like(s) if temperature is None else torch.softmax(s / temperature, dim=1)
        return F.normalize((w.unsqueeze(-1) * x).sum(1), dim=-1)

    def forward(self, context: torch.Tensor) -> Prediction:
        sims, nxt = self.search(context, self.neighbours)
        q = self.vote(sims, nxt, self.neighbours, self.temperature)
        return Prediction(q, q, torch.tensor(1.0))


def choose(val: Split, k: int, candidates: Callable[[torch.Tensor], dict[Hashable, torch.Tensor]]) -> dict:
    """Score candidate predictors on val and pick one: ``candidates(context (B, K, D)) -> {key: (B, D) unit
    predictions}``; each key's R@5 and MRR@10 against the val bank (as the deployment check scores them), over at
    most CHOICE_WINDOWS val windows. Returns {"best": the key with the highest R@5, ties broken by MRR@10, then by
    the candidates' order; "criterion", "windows", "scores": {key: {r_at_5, mrr_at_10}}}."""
    ev = Evaluator(val, P7Config(context_length=k, precision="fp32"), max_windows=CHOICE_WINDOWS, retrieval=False)
    bank = ev.st.chunks.float()
    ranks = ev.gather(lambda b, targets: {key: M.retrieval_ranks(q, bank, targets)
                                          for key, q in candidates(b.context).items()})
    scores = {key: {m: v for m, v in M.retrieval(r).items() if m in ("r_at_5", "mrr_at_10")}
              for key, r in ranks.items()}
    best = max(scores, key=lambda key: (scores[key]["r_at_5"], scores[key]["mrr_at_10"]))
    return {"best": best, "criterion": CRITERION, "windows": len(ev.index), "scores": scores}


def tuned_ridge(train: Split, val: Split, k: int, alphas=RIDGE_ALPHAS) -> Ridge:
    """Ridge fitted on train with the alpha_scale of ``alphas`` that choose() picks on val (X^T X computed once)."""
    moments = RidgeMoments(train, k)
    weights = {a: moments.solve(a) for a in alphas}
    choice = choose(val, k, lambda c: {a: Ridge.predict(c, w) for a, w in weights.items()})
    ridge = Ridge(train, k, choice["best"], moments)
    ridge.choice = {**choice, "best": ridge.hyperparameters,
                    "scores": [{"alpha_scale": a, **s} for a, s in choice["scores"].items()]}
    return ridge


def tuned_knn(train: Split, val: Split, k: int, neighbours=KNN_NEIGHBOURS,
              temperatures=KNN_TEMPERATURES) -> KnnSuccessor:
    """KnnSuccessor on train with the (neighbours, temperature) of the grid that choose() picks on val (one search
    of the largest neighbourhood serves every candidate)."""
    knn = KnnSuccessor(train, k)
    grid = [(n, t) for n in neighbours for t in temperatures if n > 1 or t is None]  # one neighbour: no weighting

    def candidates(context):
        sims, nxt = knn.search(context, max(neighbours))
        return {(n, t): knn.vote(sims, nxt, n, t) for n, t in grid}

    choice = choose(val, k, candidates)
    knn.neighbours, knn.temperature = choice["best"]
    knn.choice = {**choice, "best": knn.hyperparameters,
                  "scores": [{"neighbours": n, "temperature": t, **s} for (n, t), s in choice["scores"].items()]}
    return knn


def references(train: Split, val: Split, k: int) -> dict[str, nn.Module]:
    """The untrained references at context length k, fitted on ``train``, hyperparameters chosen on ``val``:
    {"ridge": tuned_ridge, "knn": tuned_knn}. Each is a module like a trained model (forward(context (B, K, D)) ->
    Prediction) with ``hyperparameters`` (what was chosen) and ``choice`` (every candidate's val scores)."""
    return {"ridge": tuned_ridge(train, val, k), "knn": tuned_knn(train, val, k)}


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
