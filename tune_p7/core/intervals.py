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


def seed_article_replicates(sums: torch.Tensor, counts: torch.Tensor, replicates: int = REPLICATES,
                            seed: int = 0) -> torch.Tensor:
    """Bootstrap replicates of a mean over training seeds and articles, resampling both (seeds x articles crossed).

    sums (S, A, M): for each of S seeds, the per-article sums of M per-window scalars, every seed scored on the same
    windows; counts (A,): windows per article. The estimate is the mean over seeds of each seed's window mean,
    theta = (1/S) sum_s (1^T sums_s) / (1^T counts). Replicate b draws S seeds with replacement (counts V (B, S))
    and, independently, A articles (counts W (B, A)):

        theta_b = (1/S) sum_s V_bs (W_b sums_s) / (W_b counts)

    so an interval from the replicates covers both the seed-to-seed and the article-to-article variation (resampling
    both ways overstates the seed x article interaction a little: conservative). A paired difference (a model's
    minus DIRECT's, same windows) is a column of per-article sum differences. Returns (B, M) float64. Seeded.
    """
    s, a, m = sums.shape
    x = sums.double()
    c = counts.double()
    g = torch.Generator().manual_seed(seed)
    step = max(BLOCK_CELLS // max(a * s, 1), 1)
    out = []
    for start in range(0, replicates, step):
        b = min(step, replicates - start)
        w = _multinomial_counts(b, a, g)
        v = _multinomial_counts(b, s, g)
        per_seed = torch.einsum("ba,sam->bsm", w, x) / (w @ c)[:, None, None]  # each seed's mean, b's articles
        out.append(torch.einsum("bs,bsm->bm", v, per_seed) / s)
    return torch.cat(out)


def _multinomial_counts(b: int, n: int, g: torch.Generator) -> torch.Tensor:
    """(b, n) float64: how often each of n units is drawn in each of b draws of n with replacement."""
    draws = torch.randint(n, (b, n), generator=g) + torch.arange(b)[:, None] * n
    return torch.bincount(draws.reshape(-1), minlength=b * n).view(b, n).double()


def percentile_interval(replicates: torch.Tensor, level: float = LEVEL) -> tuple[torch.Tensor, torch.Tensor]:
    """lo, hi (M,): the (1-level)/2 and (1+level)/2 quantiles of (B, M) bootstrap replicates."""
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(replicates.double(), q, dim=0)
    return lo, hi


def p_not_above(replicates: torch.Tensor, threshold: float) -> torch.Tensor:
    """(M,) one-sided bootstrap p-values of H0: theta <= threshold, p = (1 + #{theta_b <= threshold}) / (B + 1).

    p < (1 - LEVEL) / 2 exactly when the two-sided LEVEL percentile interval's lower bound clears ``threshold``
    (up to the quantile's interpolation), so a single comparison reads as "with 95% confidence"."""
    b = replicates.shape[0]
    return (1 + (replicates <= threshold).sum(0).double()) / (b + 1)


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
