"""Cluster-robust intervals over articles: what every evaluation reports as <key>_lo / <key>_hi (their coverage with
few, uneven articles: tests/core/test_clustered.py)."""
import torch
from scipy import stats

from conftest import small_config
from tune_p7.core.intervals import article_intervals, interval_keys
from tune_p7.core.loop import Evaluator, fit
from tune_p7.data.loading import load

KEYS = ("margin", "cos_next", "cos_anchor", "r_at_5", "mrr_at_10", "r_at_5_vs_direct", "mrr_at_10_vs_direct")


def windows(articles: int, per_article: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(articles * per_article, 2, generator=g)
    return values, torch.arange(articles).repeat_interleave(per_article)


def test_the_interval_contains_the_mean_and_shrinks_with_more_articles():
    widths = []
    for n in (20, 80, 320):
        values, article = windows(n, 4)
        lo, hi = article_intervals(values, article)
        mean = values.double().mean(0)
        assert (lo <= mean).all() and (mean <= hi).all()
        widths.append(float((hi - lo).mean()))
    assert widths[0] > widths[1] > widths[2] and widths[0] / widths[2] > 2.5  # ~1/sqrt(n): 4x over 16x articles


def test_the_clusters_are_articles_not_windows():
    """Ten identical windows per article carry no more information than one: the interval must not narrow, as one
    that took windows as independent would (by ~sqrt(10))."""
    values, article = windows(60, 1)
    lo1, hi1 = article_intervals(values, article)
    lo10, hi10 = article_intervals(values.repeat_interleave(10, 0), article.repeat_interleave(10))
    assert torch.allclose(lo1, lo10) and torch.allclose(hi1, hi10)
    per_window_lo, per_window_hi = article_intervals(values.repeat_interleave(10, 0), torch.arange(600))
    assert float((per_window_hi - per_window_lo).mean()) < 0.5 * float((hi1 - lo1).mean())


def test_a_paired_difference_is_narrower_than_its_parts_when_they_move_together():
    g = torch.Generator().manual_seed(0)
    article = torch.arange(100).repeat_interleave(3)
    shared = torch.randn(100, generator=g).repeat_interleave(3)
    model = shared + 0.1 * torch.randn(300, generator=g)
    direct = shared + 0.1 * torch.randn(300, generator=g)
    out = interval_keys({"model": model, "direct": direct, "diff": model - direct}, article)
    assert out["diff_hi"] - out["diff_lo"] < 0.3 * (out["model_hi"] - out["model_lo"])


def test_it_is_the_t_interval_of_the_article_means_for_equal_articles_and_nan_for_one_article():
    """Equal window counts: CR2 is the classic t interval over the A article means with A - 1 df."""
    values, article = windows(6, 4)
    means = values.double().view(6, 4, 2).mean(1)
    half = stats.t.ppf(0.975, 5) * means.std(0) / 6 ** 0.5
    lo, hi = article_intervals(values, article)
    assert torch.allclose(lo, means.mean(0) - half) and torch.allclose(hi, means.mean(0) + half)
    lo, hi = article_intervals(values[:4], article[:4])
    assert torch.isnan(lo).all() and torch.isnan(hi).all()


def test_every_epoch_and_the_probe_carry_the_intervals(small_store):
    history = fit(small_config(epochs=1), load(small_store))
    m = history[-1]
    for k in KEYS + ("r_at_5_xctx", "direct_r_at_5", "direct_mrr_at_10", "centroid_r_at_5"):
        assert m[k + "_lo"] <= m[k] <= m[k + "_hi"], k
    assert abs(m["r_at_5_vs_direct"] - (m["r_at_5"] - m["direct_r_at_5"])) < 1e-6
    ev = Evaluator(load(small_store).val, small_config())
    assert ev.window_article.shape == (len(ev.st),)


def test_the_probe_reports_intervals_for_its_baselines(small_store):
    from tune_p7.probe import probe

    base = probe(load(small_store), 3)["splits"]["val"]["baselines"]
    for name in ("direct", "ridge"):
        assert base[name]["r_at_5_lo"] <= base[name]["r_at_5"] <= base[name]["r_at_5_hi"], name
    assert base["ridge"]["margin_lo"] <= base["ridge"]["margin"] <= base["ridge"]["margin_hi"]
