"""95% intervals over articles for the window means of per-window scalars, as every evaluation reports them
(<key>_lo / <key>_hi): one fixed model's figures on a split, uncertain only in which articles the split drew.

Windows of one article share chunks, so they are not independent samples: the interval is cluster-robust over
articles, the CR2 / Bell-McCaffrey t interval of tune_p7.core.clustered with one run (no run component), which
keeps its 95% with few articles of unequal size where a percentile bootstrap does not (tests/core/test_clustered.py).
"""
from __future__ import annotations

import numpy as np
import torch

from tune_p7.core.clustered import cluster_estimate, t_interval
from tune_p7.core.metrics import retrieval_per_window


def article_intervals(values: torch.Tensor, article: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 95% cluster-robust interval of each column's window mean, clustered by article.

    values (N, M): M per-window scalars; article (N,): each window's article id. With S (A, M) the per-article
    sums and c (A,) the per-article window counts, theta = sum_a S_a / sum_a c_a and the interval is
    theta -+ t_df sqrt(V) with V and df those of tune_p7.core.clustered (CR2 over articles, Bell-McCaffrey df).
    Returns lo, hi (M,); NaN with one article (no spread between articles to measure). A paired difference is a
    column of per-window differences: both terms share the articles. Deterministic.
    """
    _, inv = torch.unique(article, return_inverse=True)
    a = int(inv.max()) + 1
    x = values.double()
    sums = torch.zeros(a, x.shape[1], dtype=torch.float64).index_add_(0, inv, x)
    counts = torch.bincount(inv, minlength=a).double()
    lo, hi = t_interval(cluster_estimate(sums.numpy()[None], np.ones((1, a), bool), counts.numpy()))
    return torch.from_numpy(np.asarray(lo, np.float64)), torch.from_numpy(np.asarray(hi, np.float64))


def hits(ranks: torch.Tensor) -> dict[str, torch.Tensor]:
    """The per-window scalars whose means are R@5 and MRR@10: (N,) ranks -> {r_at_5, mrr_at_10} (N,)."""
    per_window = retrieval_per_window(ranks)
    return {k: per_window[k] for k in ("r_at_5", "mrr_at_10")}


def interval_keys(columns: dict[str, torch.Tensor], article: torch.Tensor) -> dict[str, float]:
    """``<key>_lo`` / ``<key>_hi`` (article_intervals) for every per-window column (N,) of ``columns``."""
    names = list(columns)
    lo, hi = article_intervals(torch.stack([columns[k].double() for k in names], 1), article)
    return {**{k + "_lo": float(v) for k, v in zip(names, lo)}, **{k + "_hi": float(v) for k, v in zip(names, hi)}}
