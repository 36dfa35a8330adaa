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
# What a space's ``metric`` may name: keys every trial reports every epoch (ASHA, the searchers and checkpoint
# retention rank by it, and a key that is never reported crashes Tune's controller mid-search)
RANKABLE = ("margin", "cos_next", "cos_prev", "cos_anchor", "cos_raw_anchor", "r_at_1", "r_at_5", "r_at_10",
            "mrr_at_10", "r_at_1_xctx", "r_at_5_xctx", "r_at_10_xctx", "mrr_at_10_xctx", "r_at_5_vs_direct",
            "mrr_at_10_vs_direct", "train_margin", "train_cos_next", "best_margin", "loss")


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
    """0-based rank of each query's target among all bank rows by cosine (a row tied with the target is not
    counted above it).

    rank_i = #{j : q_i.bank_j > q_i.bank[target_i]}; a query whose target score is NaN gets rank M (never found).
    queries (N, D), bank (M, D), target_rows (N,) -> (N,) int64. Computed in blocks of queries, one matmul each.
    """
    none = target_rows.new_empty(len(target_rows), 0)
    return retrieval_ranks_xctx(queries, bank, target_rows, none, block)[0]


def retrieval_ranks_xctx(queries: torch.Tensor, bank: torch.Tensor, target_rows: torch.Tensor,
                         context_rows: torch.Tensor, block: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks of each query's target in the whole bank and with the query's own context chunks left out of it.

    rank_i      = #{j : s_ij > s_i,t_i}                      with s_ij = q_i.bank_j, t_i = target_rows[i]
    rank_xctx_i = rank_i - #{c in set(context_rows[i]) - {t_i} : s_ic > s_i,t_i}

    The bank holds every chunk of the split, so a query's own context (ctx[-1] above all) competes with its target:
    copy-last can never be first. The second rank is the same retrieval with those K chunks removed, each distinct
    chunk counted once, the target never removed; it costs a gather from the same score block, no second matmul.
    A NaN target score gives rank M in both (never found).
    queries (N, D), bank (M, D), target_rows (N,), context_rows (N, K) -> two (N,) int64.
    """
    ranks = torch.empty(len(queries), dtype=torch.long, device=queries.device)
    ranks_xctx = torch.empty_like(ranks)
    ctx = context_rows.sort(dim=1).values
    first = torch.ones_like(ctx, dtype=torch.bool)
    first[:, 1:] = ctx[:, 1:] != ctx[:, :-1]  # a chunk twice in one context is left out once
    keep = first & (ctx != target_rows[:, None])
    for i in range(0, len(queries), block):
        sl = slice(i, i + block)
        scores = queries[sl] @ bank.T
        own = scores.gather(1, target_rows[sl, None])
        above = scores > own
        rank = above.sum(1)
        ctx_above = (above.gather(1, ctx[sl]) & keep[sl]).sum(1)
        lost = own.squeeze(1).isnan()
        ranks[sl] = torch.where(lost, len(bank), rank)
        ranks_xctx[sl] = torch.where(lost, len(bank), rank - ctx_above)
    return ranks, ranks_xctx


def retrieval_per_window(ranks: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-window retrieval scalars, (N,) ranks -> dict of (N,) float64: r_at_k = [rank < k] for k in 1, 5, 10;
    mrr_at_10 = 1 / (rank + 1) if rank < 10 else 0. Their means are ``retrieval``'s figures."""
    r = ranks.double()
    out = {f"r_at_{k}": (r < k).double() for k in (1, 5, 10)}
    out["mrr_at_10"] = torch.where(r < 10, 1.0 / (r + 1), torch.zeros_like(r))
    return out


def retrieval(ranks: torch.Tensor, prefix: str = "", suffix: str = "") -> dict[str, float]:
    """R@1, R@5, R@10 = mean(rank < k); MRR@10 = mean(1 / (rank + 1) if rank < 10 else 0); keys
    prefix + name + suffix."""
    return {prefix + k + suffix: float(v.mean()) for k, v in retrieval_per_window(ranks).items()}


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


def fail_reasons(m: Mapping[str, float]) -> list[str]:
    """The FAIL thresholds ``m`` misses, each as "key value < threshold"; empty exactly when verdict(m) != FAIL."""
    return [f"{k} {m.get(k, math.nan):+.2f} < {t:.2f}" for k, t in MARGINAL.items() if not _ge(m.get(k), t)]


def deploy_ok(m: Mapping[str, float]) -> bool:
    """R@5 >= DIRECT's R@5 + 0.10 and MRR@10 >= DIRECT's MRR@10 + 0.05, on the same bank."""
    return (_ge(m.get("r_at_5"), m.get("direct_r_at_5", math.nan) + DEPLOY_R5)
            and _ge(m.get("mrr_at_10"), m.get("direct_mrr_at_10", math.nan) + DEPLOY_MRR))
