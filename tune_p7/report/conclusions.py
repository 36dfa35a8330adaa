"""What a confirmation lets a user conclude: intervals over seeds and articles on the held-out split, and a
recommendation that judges every confirmed configuration.

The figures rest on the held-out split (``ood``), which no search decision looked at: the search ranked on val, so
val figures of its winners carry the winner's curse. Every interval is a two-level bootstrap (intervals.
seed_article_replicates): training seeds and held-out articles are both resampled, so it covers the seed-to-seed
and the article-to-article variation. Differences with DIRECT and ridge are per article on the same windows
(ridge fitted at the configuration's own context length). The recommendation tests every configuration and adjusts
for comparing K of them at once (Holm); a configuration with a diverged seed is not robust and is not recommended.
"""
from __future__ import annotations

import math

import pandas as pd
import torch

from tune_p7 import storage
from tune_p7.core.intervals import LEVEL, holm, p_not_above, percentile_interval, seed_article_replicates
from tune_p7.core.verdicts import DEPLOY_MRR, DEPLOY_R5, PASS, verdict
from tune_p7.tuning.confirm import ARTICLES_FILE, TABLE_FILE, read_plan

METRICS = ("margin", "cos_next", "cos_anchor", "r_at_5", "mrr_at_10")
DEPLOY = {"r_at_5": DEPLOY_R5, "mrr_at_10": DEPLOY_MRR}  # metric -> margin over DIRECT the deployment check needs
DIFFS = tuple(f"{k}_minus_{b}" for b in ("direct", "ridge") for k in DEPLOY)
LABEL = {"margin": "margin", "cos_next": "cos_next", "cos_anchor": "cos_anchor", "r_at_5": "R@5",
         "mrr_at_10": "MRR@10"}
REPLICATES = 2000  # the Holm thresholds go down to 0.025 / K: enough replicates below them to count
ALPHA = (1 - LEVEL) / 2  # one-sided family-wise level: with one configuration, "the 95% lower bound clears"


def heldout_split(articles: pd.DataFrame) -> str:
    """The split the conclusions rest on: ``ood`` where the data has one, else val (biased upward)."""
    return "ood" if (articles["split"] == "ood").any() else "val"


def figures(model: pd.DataFrame, ridge: pd.DataFrame, seed: int = 0) -> dict:
    """Point estimates, 95% intervals and one-sided p-values of one configuration on one split.

    model: per-article rows of its completed seeds (seed, article, count, METRICS sums and direct_<metric> sums);
    ridge: ridge's per-article rows on the same windows. Returns {<key>, <key>_lo, <key>_hi} for METRICS and DIFFS
    (<metric>_minus_direct = model - DIRECT per article, paired; likewise ridge), and p-values of H0 "not above":
    p_deploy (R@5 - DIRECT <= 0.10 or MRR@10 - DIRECT <= 0.05), p_direct and p_ridge (either difference <= 0).
    """
    out = {k: math.nan for k in (*METRICS, *DIFFS) for k in (k, k + "_lo", k + "_hi")}
    out.update(p_deploy=math.nan, p_direct=math.nan, p_ridge=math.nan)
    if model.empty:
        return out
    ridge = ridge.set_index("article").sort_index()
    seeds = []
    for _, g in model.groupby("seed", sort=True):
        g = g.set_index("article").reindex(ridge.index)
        cols = {k: g[k] for k in METRICS}
        cols.update({f"{k}_minus_direct": g[k] - g["direct_" + k] for k in DEPLOY})
        cols.update({f"{k}_minus_ridge": g[k] - ridge[k] for k in DEPLOY})
        seeds.append(torch.tensor(pd.DataFrame(cols).to_numpy(), dtype=torch.float64))
    sums = torch.stack(seeds)  # (S, A, M)
    counts = torch.tensor(ridge["count"].to_numpy(), dtype=torch.float64)
    names = [*METRICS, *DIFFS]
    reps = seed_article_replicates(sums, counts, REPLICATES, seed)
    point = (sums.sum(1) / counts.sum()).mean(0)
    lo, hi = percentile_interval(reps)
    for i, k in enumerate(names):
        out[k], out[k + "_lo"], out[k + "_hi"] = float(point[i]), float(lo[i]), float(hi[i])

    def p(threshold: dict[str, float], base: str) -> float:  # intersection-union: both differences must clear
        return max(float(p_not_above(reps[:, names.index(f"{k}_minus_{base}")], t)) for k, t in threshold.items())

    out.update(p_deploy=p(DEPLOY, "direct"), p_direct=p(dict.fromkeys(DEPLOY, 0.0), "direct"),
               p_ridge=p(dict.fromkeys(DEPLOY, 0.0), "ridge"))
    return out


def aggregate(rows: pd.DataFrame, articles: pd.DataFrame, split: str | None = None) -> pd.DataFrame:
    """One row per configuration: n completed seeds of ``seeds``, ``diverged`` (errored seeds), ``gated`` (seeds a
    gate would have stopped), figures() on ``split`` (default heldout_split), the mean val margin of its seeds
    (``val_margin``: the split that chose it), the verdict of the means, robust_pass (every PASS metric's lower
    bound clears its threshold), robust_deploy (the lower bounds of R@5 - DIRECT and MRR@10 - DIRECT clear +0.10
    and +0.05), and Holm's decisions over the configurations without a diverged seed: deploy, beats_direct,
    beats_ridge."""
    split = split or heldout_split(articles)
    here = articles[articles["split"] == split]
    out = []
    for rank, g in rows.groupby("config_rank", sort=True):
        done = g[g["status"] == "completed"]
        a = here[here["config_rank"] == rank]
        row = {"config_rank": int(rank), "source_trial": g["source_trial"].iloc[0], "n": len(done),
               "seeds": len(g), "diverged": int((g["status"] == "errored").sum()),
               "gated": int(done["gate"].notna().sum()),
               "val_margin": float(done["margin"].mean()) if "margin" in done and len(done) else math.nan}
        row.update(figures(a[(a["source"] == "model") & a["seed"].isin(done["seed"])], a[a["source"] == "ridge"]))
        row["verdict"] = verdict({k: row[k] for k in METRICS})
        row["robust_pass"] = all(row[k + "_lo"] >= t for k, t in PASS.items())
        row["robust_deploy"] = all(row[f"{k}_minus_direct_lo"] >= t for k, t in DEPLOY.items())
        out.append(row)
    agg = pd.DataFrame(out)
    eligible = (agg["diverged"] == 0) & (agg["n"] > 0)
    for name, p in (("deploy", "p_deploy"), ("beats_direct", "p_direct"), ("beats_ridge", "p_ridge")):
        agg[name] = False
        agg.loc[eligible, name] = holm(agg.loc[eligible, p].tolist(), ALPHA)
    return agg


# ------------------------------------------------------------------------------------------------ the section
def _iv(row, key: str, signed: bool = False) -> str:
    mean, lo, hi = row[key], row[key + "_lo"], row[key + "_hi"]
    f = "+.3f" if signed else ".3f"
    return "nan" if not math.isfinite(mean) else f"{mean:{f}} [{lo:{f}}, {hi:{f}}]"


def _name(row, record: dict) -> str:
    src = next(c for c in record["configs"] if c["rank"] == row["config_rank"])
    cfg = ", ".join(f"{k}={v}" for k, v in src["varied"].items())
    sched = " (its PBT schedule replayed)" if src.get("schedule") else ""
    return f"rank {row['config_rank']} ({row['source_trial']}{': ' + cfg if cfg else ''}){sched}"


def _names(rows: pd.DataFrame, record: dict) -> str:
    return "; ".join(_name(r, record) for _, r in rows.iterrows())


def where(split: str, articles: pd.DataFrame) -> str:
    """How the figures' split is named in the text, with its size."""
    ridge = articles[(articles["split"] == split) & (articles["source"] == "ridge")]
    first = ridge[ridge["config_rank"] == ridge["config_rank"].min()]
    size = f"{len(first)} articles, {int(first['count'].sum())} windows"
    if split == "ood":
        return f"the held-out split (ood, {size}), which no search decision looked at"
    return (f"val ({size}): **the data has no held-out split, so these figures are on the split that chose these "
            "configurations and are biased upward**")


def table(agg: pd.DataFrame, record: dict) -> list[str]:
    head = ["configuration", "n", *[LABEL[k] for k in METRICS],
            *[f"{LABEL[k.split('_minus_')[0]]} - {k.split('_minus_')[1]}" for k in DIFFS], "val margin (chose it)",
            "verdict (mean)", "robust_pass", "robust_deploy", "gated", "diverged"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in agg.iterrows():
        n = f"{r['n']}/{r['seeds']}" + (" (one seed: intervals over articles only)" if r["n"] == 1 else "")
        cells = [_name(r, record), n, *[_iv(r, k) for k in METRICS],
                 *[_iv(r, k, signed=True) for k in DIFFS], f"{r['val_margin']:+.3f}", r["verdict"],
                 str(r["robust_pass"]), str(r["robust_deploy"]), f"{r['gated']}/{r['n']}", str(r["diverged"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def recommendation(agg: pd.DataFrame, record: dict) -> str:
    """The closing paragraph: every configuration that beats DIRECT by the deployment margins, or DIRECT at all,
    and every one that beats ridge, with 95% confidence Holm-adjusted over the configurations compared; or, in so
    many words, that none does. Diverged seeds are counted, and their configurations named as not robust."""
    done = agg[agg["n"] > 0]
    if done.empty:
        return "**No confirmation seed completed: nothing can be concluded.**"
    k = int(((agg["diverged"] == 0) & (agg["n"] > 0)).sum())
    how = (f"with 95% confidence, Holm-adjusted for comparing {k} configuration{'s' * (k != 1)} at once "
           f"(one-sided, family-wise level {ALPHA:g})")

    def figs(rows):
        return "; ".join(f"{_name(r, record)}: R@5 - DIRECT {_iv(r, 'r_at_5_minus_direct', True)}, MRR@10 - DIRECT "
                         f"{_iv(r, 'mrr_at_10_minus_direct', True)}" for _, r in rows.iterrows())

    deploy, direct = done[done["deploy"]], done[done["beats_direct"]]
    if len(deploy):
        best = deploy.sort_values("r_at_5_minus_direct_lo", ascending=False)
        text = (f"**Recommendation: {_name(best.iloc[0], record)}.** Beat DIRECT by the deployment margins "
                f"(+{DEPLOY_R5:.2f} R@5, +{DEPLOY_MRR:.2f} MRR@10) {how}: {figs(best)}.")
        passing = best[best["robust_pass"]]
        text += (f" PASS robustly (every PASS metric's lower bound clears its threshold): "
                 f"{_names(passing, record)}." if len(passing) else " None of them PASSes the verdict robustly.")
    elif len(direct):
        text = (f"**No configuration beats DIRECT by the deployment margins with confidence.** These beat DIRECT "
                f"{how}, but not by +{DEPLOY_R5:.2f} / +{DEPLOY_MRR:.2f}: {figs(direct)}.")
    else:
        best = done.sort_values("r_at_5_minus_direct", ascending=False)
        text = f"**No configuration beats DIRECT with confidence** ({how}). The figures: {figs(best)}."
    ridge = done[done["beats_ridge"]]
    text += (f" **Beat ridge** {how}: {_names(ridge, record)}." if len(ridge) else
             " **No configuration beats ridge with confidence** (none has both its R@5 and its MRR@10 difference "
             "with ridge above 0).")
    diverged, seeds = int(agg["diverged"].sum()), int(agg["seeds"].sum())
    if diverged:
        bad = agg[agg["diverged"] > 0]
        text += (f" {diverged} of {seeds} seeds diverged (loss NaN): {_names(bad, record)} "
                 f"{'is' if len(bad) == 1 else 'are'} not robust and left out of the comparison.")
    else:
        text += f" No seed diverged ({seeds} seeds)."
    return text


def markdown(exp: str) -> str:
    """The "Confirmed" section of summary.md from confirm.parquet, confirm_articles.parquet and confirm.json."""
    record = read_plan(exp)
    if not storage.exists(storage.join(exp, ARTICLES_FILE)):
        return ("## Confirmed\n\nThis confirmation has no per-article figures (made by an older tune_p7): resume it "
                "with a new --name, or run the confirmation again, to see intervals over seeds and articles.")
    rows = storage.read_parquet(storage.join(exp, TABLE_FILE))
    articles = storage.read_parquet(storage.join(exp, ARTICLES_FILE))
    split = heldout_split(articles)
    agg = aggregate(rows, articles, split)
    top = len(record["configs"])
    intro = (f"The top {top} configuration{'s' * (top != 1)} of the ranked table (ranked on val) trained again at "
             f"their full epochs with {len(record['seed_values'])} new seeds each ({record['seed_values']}), without "
             f"early stopping, and scored on {where(split, articles)}. Each cell: the mean over the completed seeds "
             f"[95% bootstrap interval over seeds and articles: {REPLICATES} replicates, each resampling the seeds, "
             "then the articles]; n: completed seeds. Differences with DIRECT and with ridge (fitted on train at the "
             "configuration's own context length) are per article on the same windows. robust_pass: every PASS "
             f"metric's lower bound clears its threshold ({', '.join(f'{k} {v:.2f}' for k, v in PASS.items())}); "
             f"robust_deploy: the lower bounds of R@5 - DIRECT and MRR@10 - DIRECT clear +{DEPLOY_R5:.2f} and "
             f"+{DEPLOY_MRR:.2f}; gated: seeds a gate would have stopped (recorded, not enforced); diverged: seeds "
             "whose loss became NaN. The val margin is the split that chose the configuration, shown for the "
             "winner's curse.")
    return "\n".join(["## Confirmed", "", intro, "", *table(agg, record), "", recommendation(agg, record)])
