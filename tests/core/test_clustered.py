"""The confirmation's intervals keep their 95% where the summary claims it: coverage by simulation of the shipped
regime and worse (few articles of skewed size, an advantage that varies by article, seed noise), against three
intervals that under-cover somewhere: runs only, articles only, and the earlier two-level percentile bootstrap.

Run with -s to print the table recorded in docs/statistics.md."""
import functools
import math

import numpy as np
import pytest
from scipy import stats

from tune_p7.core.clustered import (LEVEL, bell_mccaffrey_df, claims_confidence, cluster_estimate, effective_articles,
                                    holm, p_not_above, t_interval)

REPS = 400
SHIPPED = [38, 23, 8, 7, 4, 2, 2]  # windows of the ood split's articles at K = 5 on the shipped store


def logistic(x):
    return 1 / (1 + np.exp(-x))


@functools.lru_cache
def regime_truth(tau: float, seed_sd: float, base: float = -0.8, advantage: float = 0.3) -> float:
    """E over articles and runs of p_model - p_direct (what an interval should cover)."""
    g = np.random.default_rng(99)
    b = g.normal(base, 1.0, 400_000)
    return float((logistic(b + g.normal(advantage, tau, b.size) + g.normal(0, seed_sd, b.size)) - logistic(b)).mean())


def simulate(counts, tau, seed_sd, folds=2, runs_per_fold=2, reps=REPS, seed=0, crossfit=True):
    """Per-window R@5-like hits of a model minus DIRECT: (sums (R, A, 1), scored (R, A)) per replication.
    crossfit: articles split into folds, each fold's runs score it; else every run scores every article."""
    g = np.random.default_rng(seed)
    counts = np.asarray(counts)
    a = len(counts)
    fold = np.arange(a) % folds if crossfit else np.zeros(a, int)
    r = (folds if crossfit else 1) * runs_per_fold
    run_fold = np.repeat(np.arange(folds if crossfit else 1), runs_per_fold)
    scored = run_fold[:, None] == fold[None, :]
    for _ in range(reps):
        b = g.normal(-0.8, 1.0, a)
        adv = g.normal(0.3, tau, a)
        v = g.normal(0, seed_sd, r)
        direct = g.binomial(counts, logistic(b))
        model = g.binomial(np.broadcast_to(counts, (r, a)), logistic(b[None] + adv[None] + v[:, None]))
        yield (model - direct[None])[:, :, None].astype(float), scored


def covers(lo, hi, truth):
    return lo <= truth <= hi, truth < lo


def ours(sums, scored, counts):
    est = cluster_estimate(sums, scored, counts)
    lo, hi = t_interval(est)
    return lo[0], hi[0]


def article_only(sums, scored, counts):
    """The article part alone (CR2, Bell-McCaffrey df): blind to the run noise its folds share."""
    y = (sums[:, :, 0] * scored).sum(0) / scored.sum(0)
    n = np.asarray(counts, float)
    p = n / n.sum()
    theta = y.sum() / n.sum()
    v = (p ** 2 * (y / n - theta) ** 2 / (1 - p)).sum()
    half = stats.t.ppf((1 + LEVEL) / 2, bell_mccaffrey_df(p)) * np.sqrt(v)
    return theta - half, theta + half


def runs_only(sums, scored, counts):
    """A t interval over the runs' own means: blind to which articles happened to be held out."""
    n = np.asarray(counts, float)
    means = (sums[:, :, 0] * scored).sum(1) / (scored * n).sum(1)
    half = stats.t.ppf((1 + LEVEL) / 2, len(means) - 1) * means.std(ddof=1) / np.sqrt(len(means))
    return means.mean() - half, means.mean() + half


def percentile_bootstrap(sums, scored, counts, replicates=1000, seed=0):
    """The earlier interval: resample the seeds, then the articles, percentile bounds (every seed scored every
    article)."""
    g = np.random.default_rng(seed)
    s, a = scored.shape
    x, n = sums[:, :, 0], np.asarray(counts, float)
    w = g.multinomial(a, np.full(a, 1 / a), replicates).astype(float)
    v = g.multinomial(s, np.full(s, 1 / s), replicates).astype(float)
    theta = ((v @ x) * w).sum(1) / s / (w @ n)
    return tuple(np.quantile(theta, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]))


def coverage(method, counts, tau, seed_sd, crossfit=True, runs_per_fold=2):
    truth = regime_truth(tau, seed_sd)
    hits = [covers(*method(s, sc, counts), truth)
            for s, sc in simulate(counts, tau, seed_sd, crossfit=crossfit, runs_per_fold=runs_per_fold)]
    inside, low_miss = np.array(hits).T
    return inside.mean(), low_miss.mean()  # two-sided coverage; one-sided miss (the truth below the lower bound)


SKEWED_40 = np.maximum(2, np.round(np.random.default_rng(3).lognormal(2.0, 1.0, 40))).astype(int).tolist()
SKEWED_20 = SKEWED_40[:20]
# (name, counts, logit SD of the advantage across articles, logit SD of a run's shift)
REGIMES = [("shipped, tau 1", SHIPPED, 1.0, 0.3), ("shipped, tau 2", SHIPPED, 2.0, 0.3),
           ("5 articles", [30, 12, 5, 3, 2], 1.0, 0.3), ("20 skewed, tau 2", SKEWED_20, 2.0, 0.3),
           ("40 skewed, tau 1", SKEWED_40, 1.0, 0.3), ("40 skewed, tau 2, seed noise 0.6", SKEWED_40, 2.0, 0.6),
           # where it breaks: one article holds most windows (no claim of confidence there)
           ("4 articles, one dominant", [60, 2, 2, 2], 2.0, 0.3), ("2 articles", [38, 23], 2.0, 0.3)]


@pytest.mark.parametrize("name, counts, tau, seed_sd", REGIMES, ids=[r[0] for r in REGIMES])
def test_the_interval_keeps_95_percent_wherever_the_summary_claims_confidence(name, counts, tau, seed_sd):
    two_sided, one_sided_miss = coverage(ours, counts, tau, seed_sd)
    eff = effective_articles(counts)
    claimed = claims_confidence(len(counts), eff)
    print(f"\n{name}: {len(counts)} articles, {eff:.1f} effective; coverage {two_sided:.3f}, one-sided miss "
          f"{one_sided_miss:.3f}; claims confidence: {claimed}")
    if claimed:
        assert two_sided >= 0.93 and one_sided_miss <= 0.04, (two_sided, one_sided_miss)


def test_each_weaker_interval_under_covers_where_its_blind_spot_matters():
    runs, _ = coverage(runs_only, SKEWED_40, 2.0, 0.3)  # articles differ a lot: the held-out draw matters
    articles, _ = coverage(article_only, SKEWED_40, 0.3, 1.0)  # runs differ a lot, shared by a fold's articles
    boot, _ = coverage(percentile_bootstrap, SHIPPED, 1.0, 0.3, crossfit=False, runs_per_fold=3)
    ours_there = [coverage(ours, SKEWED_40, 2.0, 0.3)[0], coverage(ours, SKEWED_40, 0.3, 1.0)[0]]
    print(f"\nruns only {runs:.3f}, articles only {articles:.3f}, percentile bootstrap at 7 articles {boot:.3f}, "
          f"ours in the first two regimes {ours_there}")
    assert runs < 0.93 and articles < 0.93 and boot < 0.93
    assert min(ours_there) >= 0.93


def test_cluster_estimate_is_the_window_mean_and_its_p_value_matches_the_interval():
    sums = np.array([[[3.0], [1.0], [0.0]], [[5.0], [1.0], [0.0]], [[0.0], [0.0], [2.0]]])
    scored = np.array([[True, True, False], [True, True, False], [False, False, True]])
    counts = np.array([4, 2, 4])
    est = cluster_estimate(sums, scored, counts)
    assert est["theta"][0] == pytest.approx((4 + 1 + 2) / 10)  # articles' means over their runs, per window
    assert est["eff_articles"] == pytest.approx(100 / 36)
    lo, hi = t_interval(est)
    assert p_not_above(est, float(lo[0]))[0] == pytest.approx((1 - LEVEL) / 2)
    with pytest.raises(ValueError, match="no run"):
        cluster_estimate(sums, scored & np.array([True, True, False]), counts)


def test_bell_mccaffrey_df_is_the_eigenvalue_formula_in_closed_form():
    """(sum lambda)^2 / sum lambda^2 over the eigenvalues of G^T G, G's columns p_a (1 - p_a)^-1/2 (delta_a - p)."""
    for counts in (SHIPPED, SKEWED_40, [60, 2, 2, 2], [5, 5]):
        p = np.asarray(counts, float) / sum(counts)
        g = (p / np.sqrt(1 - p))[None, :] * (np.eye(len(p)) - p[:, None])
        lam = np.linalg.eigvalsh(g.T @ g)
        assert bell_mccaffrey_df(p) == pytest.approx(lam.sum() ** 2 / (lam ** 2).sum(), rel=1e-9), counts


def test_bell_mccaffrey_df_is_a_minus_1_for_equal_articles_and_smaller_when_one_dominates():
    assert bell_mccaffrey_df(np.full(8, 1 / 8)) == pytest.approx(7)
    skewed = np.array(SHIPPED, float) / sum(SHIPPED)
    assert bell_mccaffrey_df(skewed) < 4


# one fixed model scoring every article (a trial's val epoch, the probe's references): no run noise to estimate
FIXED = [("shipped, tau 1", SHIPPED, 1.0), ("shipped, tau 2", SHIPPED, 2.0),
         ("5 articles, tau 2", [30, 12, 5, 3, 2], 2.0), ("20 skewed, tau 2", SKEWED_20, 2.0),
         ("4 articles, one dominant", [60, 2, 2, 2], 2.0)]


@pytest.mark.parametrize("name, counts, tau", FIXED, ids=[r[0] for r in FIXED])
def test_one_fixed_models_interval_keeps_95_percent_wherever_confidence_is_claimed(name, counts, tau):
    """tune_p7.core.intervals: the same estimator with one run, which every epoch's and the probe's bounds use."""
    two_sided, one_sided_miss = coverage(ours, counts, tau, 0.0, crossfit=False, runs_per_fold=1)
    claimed = claims_confidence(len(counts), effective_articles(counts))
    print(f"\none fixed model, {name}: coverage {two_sided:.3f}, one-sided miss {one_sided_miss:.3f}; "
          f"claims confidence: {claimed}")
    if claimed:
        assert two_sided >= 0.93 and one_sided_miss <= 0.04, (two_sided, one_sided_miss)


def test_the_percentile_bootstrap_over_articles_under_covers_one_fixed_model_at_7_articles():
    """What every epoch's and the probe's bounds were before: one run, articles resampled, percentile bounds."""
    boot, miss = coverage(percentile_bootstrap, SHIPPED, 1.0, 0.0, crossfit=False, runs_per_fold=1)
    print(f"\none fixed model, shipped: percentile bootstrap coverage {boot:.3f}, one-sided miss {miss:.3f}")
    assert boot < 0.93


def test_holm_steps_down_and_p_values_match_the_lower_bound():
    assert holm([0.001, 0.02, 0.04], 0.05) == [True, True, True]  # 0.001 <= .0167, 0.02 <= .025, 0.04 <= .05
    assert holm([0.001, 0.03, 0.04], 0.05) == [True, False, False]  # 0.03 > 0.025 stops the steps
    assert holm([0.04, 0.001], 0.05) == [True, True]
    assert holm([math.nan, 0.001], 0.05) == [False, True]
