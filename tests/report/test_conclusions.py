"""What a confirmation concludes: intervals over seeds and articles that cover the truth, and a recommendation
that judges every confirmed configuration (on hand-made per-article tables: no training)."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from tune_p7.core.intervals import holm, p_not_above, seed_article_replicates
from tune_p7.report.conclusions import aggregate, figures, heldout_split, recommendation, where

KEYS = ("margin", "cos_next", "cos_anchor", "r_at_5", "mrr_at_10")


def article_tables(rng, rank, seeds, articles, model_logit, direct_logit, sd_article, sd_seed, windows=(2, 9)):
    """Per-article sums of per-window hits as confirm.collect stores them: R@5 (and MRR@10, the same hits) of a
    model whose hit probability is sigmoid(model_logit + u_a + v_s) and of DIRECT's, sigmoid(direct_logit + u_a):
    u_a an article effect both share (a hard article is hard for both), v_s the seed's."""
    u = rng.normal(0, sd_article, articles)
    count = rng.integers(*windows, articles)
    direct = rng.binomial(count, 1 / (1 + np.exp(-(direct_logit + u)))).astype(float)
    frames = []
    for s in [*seeds, -1]:  # seed -1: ridge, as good as DIRECT here
        hits = direct if s == -1 else \
            rng.binomial(count, 1 / (1 + np.exp(-(model_logit + u + rng.normal(0, sd_seed))))).astype(float)
        frames.append(pd.DataFrame({"config_rank": rank, "seed": s, "source": "ridge" if s == -1 else "model",
                                    "split": "ood", "article": np.arange(articles), "count": count,
                                    **{k: hits for k in KEYS}, **{"direct_" + k: direct for k in KEYS}}))
    return pd.concat(frames, ignore_index=True)


def truth(model_logit, direct_logit, sd_article, sd_seed, n=2_000_000):
    """E over articles and seeds of the model's hit rate minus DIRECT's (Monte Carlo, SE ~2e-4)."""
    rng = np.random.default_rng(123)
    u, v = rng.normal(0, sd_article, n), rng.normal(0, sd_seed, n)
    return float(np.mean(1 / (1 + np.exp(-(model_logit + u + v))) - 1 / (1 + np.exp(-(direct_logit + u)))))


def test_the_confirmation_interval_covers_the_true_difference_with_direct_and_the_seed_only_one_does_not():
    """200 simulated confirmations (5 seeds, 40 held-out articles): the nominal 95% interval of R@5 - DIRECT must
    cover the true difference in >= 90% of them; the seed-only t-interval of the old confirmation (t over the 5
    per-seed differences, DIRECT a constant) ignores the articles and covers it visibly less often."""
    params = dict(model_logit=0.3, direct_logit=0.0, sd_article=1.5, sd_seed=0.15)
    true = truth(**params)
    rng = np.random.default_rng(0)
    covered = seed_only = 0
    reps = 200
    for i in range(reps):
        t = article_tables(rng, 1, range(5), 40, **params)
        f = figures(t[t["source"] == "model"], t[t["source"] == "ridge"], seed=i)
        covered += f["r_at_5_minus_direct_lo"] <= true <= f["r_at_5_minus_direct_hi"]
        m = t[t["source"] == "model"]
        sums = m.groupby("seed")[["r_at_5", "direct_r_at_5", "count"]].sum()
        per_seed = (sums["r_at_5"] - sums["direct_r_at_5"]) / sums["count"]
        half = stats.t.ppf(0.975, len(per_seed) - 1) * per_seed.std(ddof=1) / math.sqrt(len(per_seed))
        seed_only += abs(per_seed.mean() - true) <= half
    assert covered / reps >= 0.90, covered
    assert seed_only / reps <= 0.85 and covered - seed_only >= 0.1 * reps, (seed_only, covered)


def test_resampling_seeds_widens_the_interval_when_seeds_disagree():
    sums = torch.zeros(4, 30, 1)
    sums[:, :, 0] = torch.tensor([0.0, 1.0, 2.0, 3.0])[:, None]  # seeds differ, articles agree
    counts = torch.ones(30)
    reps = seed_article_replicates(sums, counts, 2000, seed=0)
    assert float(reps.std()) > 0.3  # articles alone would give width 0
    flat = seed_article_replicates(sums[:1].expand(4, 30, 1), counts, 2000, seed=0)
    assert float(flat.std()) == 0.0


def test_holm_steps_down_and_p_values_match_the_lower_bound():
    assert holm([0.001, 0.02, 0.04], 0.05) == [True, True, True]  # 0.001 <= .0167, 0.02 <= .025, 0.04 <= .05
    assert holm([0.001, 0.03, 0.04], 0.05) == [True, False, False]  # 0.03 > 0.025 stops the steps
    assert holm([0.04, 0.001], 0.05) == [True, True]
    assert holm([math.nan, 0.001], 0.05) == [False, True]
    reps = torch.linspace(0, 1, 1001)[:, None].double()
    assert float(p_not_above(reps, 0.0)) == pytest.approx(2 / 1002)
    assert float(p_not_above(reps, 0.5)) == pytest.approx(502 / 1002)


def confirmed(rng, specs):
    """confirm.parquet-like rows and per-article tables for configurations (rank, model_logit, diverged seeds)."""
    rows, tables = [], []
    for rank, logit, diverged in specs:
        tables.append(article_tables(rng, rank, range(1, 6), 60, logit, -2.0, 0.5, 0.05))
        for s in range(1, 6 + diverged):
            rows.append({"config_rank": rank, "source_trial": f"t{rank}", "seed": s, "gate": None, "margin": 0.1,
                         "status": "errored" if s > 5 else "completed"})
    return pd.DataFrame(rows), pd.concat(tables)


def record(ranks):
    return {"configs": [{"rank": r, "trial_id": f"t{r}", "varied": {"lr": r}} for r in ranks]}


def test_the_recommendation_names_the_second_configuration_when_only_it_beats_direct():
    rows, articles = confirmed(np.random.default_rng(1), [(1, -2.0, 0), (2, 0.5, 0)])
    agg = aggregate(rows, articles)
    assert agg["deploy"].tolist() == [False, True]
    text = recommendation(agg, record([1, 2]))
    assert text.startswith("**Recommendation: rank 2 (t2: lr=2).**"), text
    assert "rank 1" not in text.split("Beat ridge")[0].split(":", 2)[-1].split("R@5")[0]
    assert "Holm-adjusted for comparing 2 configurations" in text


def test_none_beats_direct_is_said_in_so_many_words():
    rows, articles = confirmed(np.random.default_rng(2), [(1, -2.0, 0), (2, -2.1, 0)])
    text = recommendation(aggregate(rows, articles), record([1, 2]))
    assert "**No configuration beats DIRECT with confidence**" in text
    assert "**No configuration beats ridge with confidence**" in text


def test_a_configuration_with_a_diverged_seed_is_not_robust_and_not_recommended():
    rows, articles = confirmed(np.random.default_rng(3), [(1, 0.5, 1), (2, 0.4, 0)])
    agg = aggregate(rows, articles)
    assert agg["diverged"].tolist() == [1, 0] and agg["deploy"].tolist() == [False, True]
    text = recommendation(agg, record([1, 2]))
    assert "**Recommendation: rank 2" in text and "1 of 11 seeds diverged" in text and "rank 1 (t1: lr=1) is not robust" in text


def test_without_a_held_out_split_the_figures_are_said_to_be_on_val_and_biased_upward():
    rows, articles = confirmed(np.random.default_rng(4), [(1, 0.5, 0)])
    on_val = articles.assign(split="val")
    assert heldout_split(articles) == "ood" and heldout_split(on_val) == "val"
    assert "held-out split (ood, 60 articles" in where("ood", articles)
    text = where("val", on_val)
    assert "no held-out split" in text and "biased upward" in text
    assert aggregate(rows, on_val)["n"].tolist() == [5]
