"""Validation metrics, verdicts and the deployment check: pure functions of tensors and numbers.

All vectors are unit rows, so a dot product is a cosine. "prev" is ctx[-1], the chunk right before the target.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F

# FACTS.md thresholds
PASS = {"margin": 0.20, "cos_next": 0.45, "cos_anchor": 0.40}
MARGINAL = {"margin": 0.10, "cos_next": 0.35, "cos_anchor": 0.30}
DRIFT = 0.05
DEPLOY_R5, DEPLOY_MRR = 0.10, 0.05


def cosines(pred: torch.Tensor, raw: torch.Tensor, context: torch.Tensor, nxt: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sequence cosines. pred, raw, nxt (N, D); context (N, K, D) -> dict of (N,):

    cos_next = pred.next, cos_prev = pred.ctx[-1], margin = cos_next - cos_prev,
    cos_anchor = pred.c and cos_raw_anchor = raw.c with c = normalize(mean_k context).
    """
    c = F.normalize(context.mean(1), dim=-1)
    cos_next = (pred * nxt).sum(-1)
    cos_prev = (pred * context[:, -1]).sum(-1)
    return {"cos_next": cos_next, "cos_prev": cos_prev, "margin": cos_next - cos_prev,
            "cos_anchor": (pred * c).sum(-1), "cos_raw_anchor": (raw * c).sum(-1)}


def retrieval_ranks(queries: torch.Tensor, bank: torch.Tensor, target_rows: torch.Tensor,
                    block: int = 2048) -> torch.Tensor:
    """0-based rank of each query's target among all bank rows by cosine (ties count against the target).

    rank_i = #{j : q_i.bank_j > q_i.bank[target_i]}; a query whose target score is NaN gets rank M (never found).
    queries (N, D), bank (M, D), target_rows (N,) -> (N,) int64. Computed in blocks of queries, one matmul each.
    """
    ranks = torch.empty(len(queries), dtype=torch.long, device=queries.device)
    for i in range(0, len(queries), block):
        q = queries[i:i + block]
        scores = q @ bank.T
        own = scores.gather(1, target_rows[i:i + block, None])
        ranks[i:i + block] = torch.where(own.squeeze(1).isnan(), len(bank), (scores > own).sum(1))
    return ranks


def retrieval(ranks: torch.Tensor, prefix: str = "") -> dict[str, float]:
    """R@1, R@5, R@10 = mean(rank < k); MRR@10 = mean(1 / (rank + 1) if rank < 10 else 0)."""
    r = ranks.float()
    out = {f"r_at_{k}": float((r < k).float().mean()) for k in (1, 5, 10)}
    out["mrr_at_10"] = float(torch.where(r < 10, 1.0 / (r + 1), torch.zeros_like(r)).mean())
    return {prefix + k: v for k, v in out.items()}


def infonce_chance(num_candidates: int) -> float:
    """InfoNCE loss of a predictor that cannot tell the candidates apart: ln(C)."""
    return math.log(num_candidates)


def _ge(x, threshold) -> bool:
    return x is not None and x >= threshold  # NaN compares False: a NaN metric never passes


def verdict(m: Mapping[str, float]) -> str:
    """PASS: margin >= 0.20, cos_next >= 0.45, cos_anchor >= 0.40. FAIL: margin < 0.10 or cos_next < 0.35 or
    cos_anchor < 0.30 (which includes drift, cos_anchor < 0.05) or any of them NaN. MARGINAL otherwise."""
    if all(_ge(m.get(k), t) for k, t in PASS.items()):
        return "PASS"
    if all(_ge(m.get(k), t) for k, t in MARGINAL.items()):
        return "MARGINAL"
    return "FAIL"


def deploy_ok(m: Mapping[str, float]) -> bool:
    """R@5 >= DIRECT's R@5 + 0.10 and MRR@10 >= DIRECT's MRR@10 + 0.05, on the same bank."""
    return (_ge(m.get("r_at_5"), m.get("direct_r_at_5", math.nan) + DEPLOY_R5)
            and _ge(m.get("mrr_at_10"), m.get("direct_mrr_at_10", math.nan) + DEPLOY_MRR))
