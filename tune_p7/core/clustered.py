"""Intervals and one-sided tests for a confirmation's held-out means: few articles of unequal size, several runs.

The confirmation scores each held-out article with the runs of its cross-fitting fold (the runs that trained
without that fold). With y[r, a] run r's sum of a per-window scalar over article a's n_a windows, S_a the runs
that scored article a and Y_a = mean_r y[r, a] over them, the estimate is the window mean

    theta = sum_a Y_a / N,    N = sum_a n_a,    p_a = n_a / N.

Its variance has two parts:
- articles (CR2, Bell & McCaffrey 2002): with e_a = Y_a / n_a - theta,
  V_art = sum_a p_a^2 e_a^2 / (1 - p_a); degrees of freedom df_art = (sum lambda)^2 / sum lambda^2 over the
  eigenvalues lambda of G^T G, G's columns g_a = p_a (1 - p_a)^-1/2 (delta_a - p) (working model: articles
  exchangeable, which is what few uneven articles with their own effects look like);
- runs: runs of one fold share their model, so their noise is common to the fold's articles, which the article
  part treats as independent. With m[r] = (sum_{a in f} y[r, a]) / N_f a run's mean over its fold, s_f^2 the
  variance of m over fold f's S_f runs and P_f = N_f / N: V_run = sum_f P_f^2 s_f^2 / S_f, with S_f - 1 degrees
  of freedom each (folds with one run add nothing: their run noise is then not estimable).

V = V_art + V_run, Satterthwaite degrees of freedom df = V^2 / (V_art^2 / df_art + sum_f V_f^2 / (S_f - 1)), and
the interval theta +- t_{df} sqrt(V). Coverage measured by simulation: tests/core/test_clustered.py, docs/statistics.md.
"""
from __future__ import annotations

import numpy as np
from scipy import special  # stdtr / stdtrit: Student's t without scipy.stats' import (0.7 s in every worker)

LEVEL = 0.95
# below these, some simulated regime's interval missed 95% (docs/statistics.md): no confidence is claimed
CONFIDENT_ARTICLES, CONFIDENT_EFFECTIVE_ARTICLES = 5, 3.0


def claims_confidence(articles: int, effective: float) -> bool:
    """Whether a mean over ``articles`` articles (``effective`` of them by Kish) may be stated with 95% confidence:
    where the simulations showed the interval keeps it."""
    return articles >= CONFIDENT_ARTICLES and effective >= CONFIDENT_EFFECTIVE_ARTICLES


def effective_articles(counts: np.ndarray) -> float:
    """Kish's effective number of articles of a window-weighted mean: (sum n_a)^2 / sum n_a^2."""
    n = np.asarray(counts, dtype=np.float64)
    return float(n.sum() ** 2 / (n ** 2).sum()) if n.sum() > 0 else 0.0


def bell_mccaffrey_df(p: np.ndarray) -> float:
    """df_art of the module docstring for window shares p (A,), summing to 1, in O(A).

    With c_a = p_a (1 - p_a)^-1/2 and s = sum p^2, G^T G has entries c_a c_b (delta_ab - p_a - p_b + s), so
    sum lambda = sum_a c_a^2 (1 - 2 p_a + s) and sum lambda^2 = sum_ab c_a^2 c_b^2 (s - p_a - p_b)^2 plus the
    diagonal's correction sum_a c_a^4 [(1 - 2 p_a + s)^2 - (s - 2 p_a)^2]."""
    p = np.asarray(p, dtype=np.float64)
    if len(p) < 2:
        return float("nan")
    u, s = p ** 2 / (1 - p), (p ** 2).sum()  # u = c^2
    q = s - p
    trace = (u * (1 - 2 * p + s)).sum()
    frob = (u.sum() * (u * q ** 2).sum() - 2 * (u * q).sum() * (u * p).sum() + u.sum() * (u * p ** 2).sum()
            + (u ** 2 * ((1 - 2 * p + s) ** 2 - (s - 2 * p) ** 2)).sum())
    return float(trace ** 2 / frob)


def cluster_estimate(sums: np.ndarray, scored: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """theta, V, df of the module docstring for M per-window scalars at once.

    sums (R, A, M): each run's per-article sums (anything where not scored); scored (R, A) bool: run r scored
    article a (its fold's articles); counts (A,) windows per article. Every article must be scored by at least
    one run; runs with the same ``scored`` row form a fold. Returns theta, var, df (each (M,)) and n_articles,
    eff_articles."""
    sums, scored = np.asarray(sums, dtype=np.float64), np.asarray(scored, dtype=bool)
    n = np.asarray(counts, dtype=np.float64)
    runs_per_article = scored.sum(0)
    if (runs_per_article == 0).any():
        raise ValueError("an article is scored by no run")
    y = np.where(scored[:, :, None], sums, 0.0).sum(0) / runs_per_article[:, None]  # (A, M)
    total = n.sum()
    p = n / total
    theta = y.sum(0) / total
    e = y / n[:, None] - theta
    v_art = (p[:, None] ** 2 * e ** 2 / (1 - p[:, None])).sum(0) if len(n) > 1 else np.full(theta.shape, np.nan)
    df_art = bell_mccaffrey_df(p)
    v_run = np.zeros_like(theta)
    df_den = v_art ** 2 / df_art
    folds, fold_of_run = np.unique(scored, axis=0, return_inverse=True)
    for f, members in enumerate(folds):
        runs = np.flatnonzero(fold_of_run.reshape(-1) == f)
        if len(runs) < 2:
            continue
        n_f = n[members].sum()
        m = sums[runs][:, members].sum(1) / n_f  # (S_f, M)
        part = (n_f / total) ** 2 * m.var(0, ddof=1) / len(runs)
        v_run += part
        df_den = df_den + part ** 2 / (len(runs) - 1)
    var = v_art + v_run
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(df_den > 0, var ** 2 / df_den, df_art)
    return {"theta": theta, "var": var, "df": df, "n_articles": len(n), "eff_articles": effective_articles(n)}


def t_interval(est: dict, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """lo, hi (M,): theta -+ t_{df, (1 + level) / 2} sqrt(var)."""
    half = special.stdtrit(est["df"], (1 + level) / 2) * np.sqrt(est["var"])
    return est["theta"] - half, est["theta"] + half


def p_not_above(est: dict, threshold: float) -> np.ndarray:
    """(M,) one-sided p-values of H0: theta <= threshold, 1 - T_df((theta - threshold) / sqrt(var)); with one
    comparison, p < (1 - LEVEL) / 2 exactly when the two-sided LEVEL interval's lower bound clears the threshold."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (est["theta"] - threshold) / np.sqrt(est["var"])
    return special.stdtr(est["df"], -t)


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
