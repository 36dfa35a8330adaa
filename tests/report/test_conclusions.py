"""What a confirmation concludes: intervals over seeds and articles that cover the truth, and a recommendation
that judges every confirmed configuration (on hand-made per-article tables: no training)."""
import json

import numpy as np
import pandas as pd

from tune_p7.report.conclusions import aggregate, caveat, heldout_split, markdown, recommendation, where

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
                                    "split": "ood", "fold": 0, "article": np.arange(articles), "count": count,
                                    **{k: hits for k in KEYS}, **{"direct_" + k: direct for k in KEYS}}))
    return pd.concat(frames, ignore_index=True)


def truth(model_logit, direct_logit, sd_article, sd_seed, n=2_000_000):
    """E over articles and seeds of the model's hit rate minus DIRECT's (Monte Carlo, SE ~2e-4)."""
    rng = np.random.default_rng(123)
    u, v = rng.normal(0, sd_article, n), rng.normal(0, sd_seed, n)
    return float(np.mean(1 / (1 + np.exp(-(model_logit + u + v))) - 1 / (1 + np.exp(-(direct_logit + u)))))


def confirmed(rng, specs):
    """confirm.parquet-like rows and per-article tables for configurations (rank, model_logit, diverged seeds)."""
    rows, tables = [], []
    for rank, logit, diverged in specs:
        tables.append(article_tables(rng, rank, range(1, 6), 60, logit, -2.0, 0.5, 0.05))
        for s in range(1, 6 + diverged):
            rows.append({"config_rank": rank, "source_trial": f"t{rank}", "seed": s, "fold": 0, "gate": None,
                         "margin": 0.1, "status": "errored" if s > 5 else "completed",
                         "failure": "nan" if s > 5 else None})
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
    assert agg["errored_nan"].tolist() == [1, 0] and agg["deploy"].tolist() == [False, True]
    text = recommendation(agg, record([1, 2]))
    assert "**Recommendation: rank 2" in text and "1 of 11 runs errored (1 NaN loss, 0 worker failure)" in text
    assert "rank 1 (t1: lr=1) is not robust" in text


def test_without_a_held_out_split_the_figures_are_said_to_be_on_val_and_biased_upward():
    rows, articles = confirmed(np.random.default_rng(4), [(1, 0.5, 0)])
    on_val = articles.assign(split="val")
    assert heldout_split(articles) == "ood" and heldout_split(on_val) == "val"
    assert "held-out split (ood, 60 articles" in where("ood", articles)
    text = where("val", on_val)
    assert "no held-out split" in text and "biased upward" in text
    assert aggregate(rows, on_val)["n"].tolist() == [5]


def test_four_held_out_articles_give_the_caveat_and_no_claim_of_confidence(tmp_path):
    rows, articles = confirmed(np.random.default_rng(5), [(1, 0.5, 0)])
    few = articles[articles["article"] < 4]
    rows.to_parquet(tmp_path / "confirm.parquet")  # the stored confirmation, as the summary reads it
    few.to_parquet(tmp_path / "confirm_articles.parquet")
    (tmp_path / "confirm.json").write_text(json.dumps({**record([1]), "seed_values": [1, 2, 3, 4, 5]}))
    section = markdown(str(tmp_path))
    assert "**Too few held-out articles for confidence:** 4 articles" in section
    assert "95% confidence" not in section
    agg = aggregate(rows, few)
    assert agg["articles"].tolist() == [4] and not agg["confident"].any() and not agg["deploy"].any()
    line, text = caveat(agg), recommendation(agg, record([1]))
    assert line.startswith("**Too few held-out articles for confidence:** 4 articles") and "\n" not in line
    assert "95% confidence" not in text and "Nothing can be claimed with confidence" in text
    assert aggregate(rows, articles)["confident"].all()  # the same runs on 60 articles do claim it
