"""Validation metrics: pure functions of tensors (the verdicts they feed are in ``verdicts.py``).

All vectors are unit rows, so a dot product is a cosine. "prev" is ctx[-1], the chunk right before the target.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

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


def contrastive_accuracy(ranks: torch.Tensor, bank_size: int) -> torch.Tensor:
    """Per window, the share of the bank's distractors that lie farther from the prediction than the true next chunk.

    acc_i = (M - 1 - rank_i) / (M - 1), rank_i = #{j : q_i.bank_j > q_i.bank[t_i]} (``retrieval_ranks``), M the bank
    size: each of the M - 1 other bank rows is a distractor, and one tied with the target is not counted closer (as
    in the rank). 1 = the target is the nearest row, 0.5 = chance (a prediction blind to the target), 0 = the
    farthest; a NaN prediction (rank M) gets 0. The reported figure is the mean over windows.
    ranks (N,) int64 -> (N,) float64.
    """
    others = max(bank_size - 1, 1)
    return ((bank_size - 1 - ranks.double()) / others).clamp(min=0.0)


def copy_rate(pred: torch.Tensor, prev: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
    """Per window, whether the prediction lies closer to ctx[-1] than to the target: copy_i = [pred_i.prev_i >
    pred_i.next_i] (1.0 or 0.0; a tie or NaN is 0). Its mean is the copy rate: the share of predictions that stay
    nearer the chunk they read than the one they should predict (DIRECT, ctx[-1] itself, scores 1).
    pred, prev, nxt (N, D) unit rows -> (N,) float64."""
    return ((pred * prev).sum(-1) > (pred * nxt).sum(-1)).double()


def infonce_chance(num_candidates: int) -> float:
    """InfoNCE loss of a predictor that cannot tell the candidates apart: ln(C)."""
    return math.log(num_candidates)
