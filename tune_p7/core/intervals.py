"""95% percentile-bootstrap intervals over articles for means of per-window scalars: one matmul for all metrics.

Windows of one article share chunks, so they are not independent samples: the bootstrap resamples whole articles.
"""
from __future__ import annotations

import torch

from tune_p7.core.metrics import retrieval_per_window

LEVEL = 0.95
REPLICATES = 1000  # percentile tails of 25 replicates each: the 2.5% quantile moves by ~0.1 SE between seeds
BLOCK_CELLS = 1 << 20  # (replicates, articles) cells per block: bounds memory for any number of articles


def article_intervals(values: torch.Tensor, article: torch.Tensor, replicates: int = REPLICATES, seed: int = 0,
                      level: float = LEVEL) -> tuple[torch.Tensor, torch.Tensor]:
    """Percentile interval of each column's window mean, resampling articles with replacement.

    values (N, M): M per-window scalars; article (N,): each window's article id. With S (A, M) the per-article
    sums and c (A,) the per-article window counts, each replicate b draws A articles with replacement (counts
    W (B, A), each row multinomial(A, 1/A)) and estimates W_b S / W_b c: one (B, A) @ (A, M) matmul. Returns
    lo, hi (M,): the (1-level)/2 and (1+level)/2 quantiles over the B replicates. A paired difference is a column
    of per-window differences: both terms see the same resampled articles. Seeded: the same inputs and seed give
    the same numbers.
    """
    _, inv = torch.unique(article, return_inverse=True)
    a = int(inv.max()) + 1
    x = values.double()
    sums = torch.zeros(a, x.shape[1], dtype=torch.float64).index_add_(0, inv, x)
    counts = torch.bincount(inv, minlength=a).double()
    g = torch.Generator().manual_seed(seed)
    step = max(BLOCK_CELLS // a, 1)
    est = []
    for start in range(0, replicates, step):
        b = min(step, replicates - start)
        draws = torch.randint(a, (b, a), generator=g) + torch.arange(b)[:, None] * a
        w = torch.bincount(draws.reshape(-1), minlength=b * a).view(b, a).double()
        est.append((w @ sums) / (w @ counts)[:, None])
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(torch.cat(est), q, dim=0)
    return lo, hi


def hits(ranks: torch.Tensor) -> dict[str, torch.Tensor]:
    """The per-window scalars whose means are R@5 and MRR@10: (N,) ranks -> {r_at_5, mrr_at_10} (N,)."""
    per_window = retrieval_per_window(ranks)
    return {k: per_window[k] for k in ("r_at_5", "mrr_at_10")}


def interval_keys(columns: dict[str, torch.Tensor], article: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """``<key>_lo`` / ``<key>_hi`` (article_intervals) for every per-window column (N,) of ``columns``."""
    names = list(columns)
    lo, hi = article_intervals(torch.stack([columns[k].double() for k in names], 1), article, seed=seed)
    return {**{k + "_lo": float(v) for k, v in zip(names, lo)}, **{k + "_hi": float(v) for k, v in zip(names, hi)}}


def holm(pvalues: list[float], alpha: float) -> list[bool]:
    """Holm's step-down test of K hypotheses at family-wise error ``alpha``: with p sorted ascending, reject
    p_(i) while p_(i) <= alpha / (K - i + 1) (i = 1..K), stop at the first that is not. NaN is never rejected.
    Returns, in the input order, whether each hypothesis is rejected."""
    k = len(pvalues)
    order = sorted(range(k), key=lambda i: (pvalues[i] != pvalues[i], pvalues[i]))  # NaN last
    rejected = [False] * k
    for rank, i in enumerate(order):
        if not pvalues[i] <= alpha / (k - rank):
            break
        rejected[i] = True
    return rejected
