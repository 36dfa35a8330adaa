"""What a confirmation lets a user conclude: intervals over runs and articles on held-out articles, and a
recommendation that judges every confirmed configuration.

The figures rest on articles no search decision looked at: the cross-fitting folds of train and the held-out split
(every such article scored by the runs that trained without it), or the held-out split (``ood``) of a confirmation
made before cross-fitting. The search ranked on val, so val figures of its winners carry the winner's curse. Every
interval is cluster-robust with a small-sample correction (core/clustered.py: CR2 over articles with Bell-McCaffrey
degrees of freedom, plus the run-to-run variation each fold's articles share), which kept its 95% in simulations
of few, uneven articles down to CONFIDENT_EFFECTIVE_ARTICLES effective ones (docs/statistics.md); below that the
section says so and claims no confidence. Configurations are compared on the same windows (those every one of
them can score, data/folds.window_mask). Differences with DIRECT and with the reference predictors (ridge and the
kNN-successor, fitted on the same training articles at the configuration's own context length and tuned on val)
are per article on those windows. The recommendation tests every
configuration and adjusts for comparing K of them at once (Holm); a configuration with an errored run is not
robust and is not recommended.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from tune_p7.core.clustered import (CONFIDENT_ARTICLES, CONFIDENT_EFFECTIVE_ARTICLES, LEVEL, claims_confidence,
                                    cluster_estimate, holm, p_not_above, t_interval)
from tune_p7.core.verdicts import DEPLOY_MRR, DEPLOY_R5, PASS, verdict
from tune_p7.data.folds import HELDOUT
from tune_p7.experiment import Experiment

METRICS = ("margin", "cos_next", "cos_anchor", "r_at_5", "mrr_at_10")
DEPLOY = {"r_at_5": DEPLOY_R5, "mrr_at_10": DEPLOY_MRR}  # metric -> margin over DIRECT the deployment check needs
REFERENCES = {"ridge": "ridge", "knn": "kNN"}  # reference predictors of the confirmation (source -> label)
BASE_LABEL = {"direct": "DIRECT", **REFERENCES}
DIFFS = tuple(f"{k}_minus_{b}" for b in ("direct", *REFERENCES) for k in DEPLOY)
LABEL = {"margin": "margin", "cos_next": "cos_next", "cos_anchor": "cos_anchor", "r_at_5": "R@5",
         "mrr_at_10": "MRR@10"}
ALPHA = (1 - LEVEL) / 2  # one-sided family-wise level: with one configuration, "the 95% lower bound clears"


def heldout_split(articles: pd.DataFrame) -> str:
    """The split the conclusions rest on: the cross-fitting folds', ``ood`` (an older confirmation), else val."""
    present = set(articles["split"])
    return next((s for s in (HELDOUT, "ood") if s in present), "val")


def figures(model: pd.DataFrame, refs: dict[str, pd.DataFrame]) -> dict:
    """Point estimates, 95% intervals and one-sided p-values of one configuration on one split.

    model: per-article rows of its completed runs (seed, fold, article, count, METRICS sums and direct_<metric>
    sums); refs: each reference's per-article rows on the same windows (one per article; "ridge" present). Returns
    {<key>, <key>_lo, <key>_hi} for METRICS and DIFFS (<metric>_minus_direct = model - DIRECT per article, paired;
    likewise each reference; NaN for a reference an older confirmation did not score),
    articles and eff_articles, and p-values of H0 "not above": p_deploy (R@5 - DIRECT <= 0.10 or MRR@10 -
    DIRECT <= 0.05), p_direct and p_<reference> (either difference <= 0).
    """
    out = {k: math.nan for k in (*METRICS, *DIFFS) for k in (k, k + "_lo", k + "_hi")}
    out.update(p_deploy=math.nan, p_direct=math.nan, **{f"p_{b}": math.nan for b in REFERENCES}, articles=0,
               eff_articles=0.0)
    if model.empty:
        return out
    ridge = refs["ridge"].set_index("article").sort_index()
    indexed = {b: refs[b].set_index("article").reindex(ridge.index) if b in refs else None for b in REFERENCES}
    model = model.assign(fold=model["fold"].fillna(-1) if "fold" in model else -1)
    runs = list(model.groupby(["seed", "fold"], sort=True))
    names = [*METRICS, *DIFFS]
    sums = np.zeros((len(runs), len(ridge), len(names)))
    scored = np.zeros((len(runs), len(ridge)), dtype=bool)
    for r, (_, g) in enumerate(runs):
        g = g.set_index("article")
        at = ridge.index.get_indexer(g.index)
        cols = [g[k] for k in METRICS] + [g[k] - g["direct_" + k] for k in DEPLOY] + \
               [g[k] - (indexed[b][k].reindex(g.index) if indexed[b] is not None else math.nan)
                for b in REFERENCES for k in DEPLOY]
        sums[r, at] = np.stack([c.to_numpy(dtype=float) for c in cols], 1)
        scored[r, at] = True
    keep = scored.any(0)  # articles a failed fold's runs would have scored are left out
    est = cluster_estimate(sums[:, keep], scored[:, keep], ridge["count"].to_numpy(dtype=float)[keep])
    lo, hi = t_interval(est)
    for i, k in enumerate(names):
        out[k], out[k + "_lo"], out[k + "_hi"] = float(est["theta"][i]), float(lo[i]), float(hi[i])

    def p(threshold: dict[str, float], base: str) -> float:  # intersection-union: both differences must clear
        return max(float(p_not_above({k: v[names.index(f"{m}_minus_{base}")] for k, v in est.items()
                                      if k in ("theta", "var", "df")}, t)) for m, t in threshold.items())

    out.update(p_deploy=p(DEPLOY, "direct"), p_direct=p(dict.fromkeys(DEPLOY, 0.0), "direct"),
               **{f"p_{b}": p(dict.fromkeys(DEPLOY, 0.0), b) for b in REFERENCES}, articles=est["n_articles"],
               eff_articles=est["eff_articles"])
    return out


def _failures(g: pd.DataFrame) -> pd.Series:
    """Each errored run's failure: "nan" (its loss turned NaN/Inf) or "worker" (Tune's error: the worker died,
    ran out of memory...); rows of an older confirmation say it by their error text."""
    if "failure" in g:
        return g["failure"]
    return g["error"].map(lambda e: None if e is None else "worker" if str(e).startswith("trial error") else "nan")


def aggregate(rows: pd.DataFrame, articles: pd.DataFrame, split: str | None = None) -> pd.DataFrame:
    """One row per configuration: n completed runs of ``seeds`` (seeds x folds), ``errored_nan`` and
    ``errored_worker`` (errored runs by cause), ``gated`` (runs a gate would have stopped), figures() on ``split``
    (default heldout_split), the mean val margin of its confirmation runs (``val_margin``), the verdict of the
    means, ``confident`` (claims_confidence of its articles), robust_pass (every PASS metric's lower bound clears
    its threshold), robust_deploy (the lower bounds of R@5 - DIRECT and MRR@10 - DIRECT clear +0.10 and +0.05),
    and Holm's decisions over the confident configurations without an errored run: deploy, beats_direct,
    beats_<reference>."""
    split = split or heldout_split(articles)
    here = articles[articles["split"] == split]
    fold = "fold" if "fold" in rows else None
    out = []
    for rank, g in rows.groupby("config_rank", sort=True):
        done = g[g["status"] == "completed"]
        failures = _failures(g)[g["status"] == "errored"]
        a = here[here["config_rank"] == rank]
        model = a[a["source"] == "model"]
        runs = set(zip(done["seed"], done[fold].fillna(-1))) if fold else None
        if fold and "fold" in model:
            model = model[[r in runs for r in zip(model["seed"], model["fold"].fillna(-1))]]
        else:
            model = model[model["seed"].isin(done["seed"])]
        row = {"config_rank": int(rank), "source_trial": g["source_trial"].iloc[0], "n": len(done),
               "seeds": len(g), "errored_nan": int((failures == "nan").sum()),
               "errored_worker": int((failures == "worker").sum()), "gated": int(done["gate"].notna().sum()),
               "val_margin": float(done["margin"].mean()) if "margin" in done and len(done) else math.nan}
        refs = {b: a[a["source"] == b].groupby("article", as_index=False).mean(numeric_only=True)
                for b in REFERENCES if (a["source"] == b).any()}
        row.update(figures(model, refs))
        row["verdict"] = verdict({k: row[k] for k in METRICS})
        row["confident"] = claims_confidence(row["articles"], row["eff_articles"])
        row["robust_pass"] = row["confident"] and all(row[k + "_lo"] >= t for k, t in PASS.items())
        row["robust_deploy"] = row["confident"] and all(row[f"{k}_minus_direct_lo"] >= t for k, t in DEPLOY.items())
        out.append(row)
    agg = pd.DataFrame(out)
    agg["diverged"] = agg["errored_nan"] + agg["errored_worker"]
    eligible = (agg["diverged"] == 0) & (agg["n"] > 0) & agg["confident"]
    for name, p in (("deploy", "p_deploy"), ("beats_direct", "p_direct"),
                    *((f"beats_{b}", f"p_{b}") for b in REFERENCES)):
        agg[name] = False
        if eligible.any():
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
    sched = " (its PBT schedule followed)" if src.get("schedule") else ""
    return f"rank {row['config_rank']} ({row['source_trial']}{': ' + cfg if cfg else ''}){sched}"


def _names(rows: pd.DataFrame, record: dict) -> str:
    return "; ".join(_name(r, record) for _, r in rows.iterrows())


def where(split: str, articles: pd.DataFrame) -> str:
    """How the figures' articles are named in the text, with their size."""
    ridge = articles[(articles["split"] == split) & (articles["source"] == "ridge")]
    first = ridge[ridge["config_rank"] == ridge["config_rank"].min()].drop_duplicates("article")
    size = f"{len(first)} articles, {int(first['count'].sum())} windows"
    if split == HELDOUT:
        return (f"every train and held-out article, each by the runs of the cross-fitting fold that trained without "
                f"it ({size}; no search decision looked at them: the search chose on val)")
    if split == "ood":
        return f"the held-out split (ood, {size}), which no search decision looked at"
    return (f"val ({size}): **the data has no held-out split, so these figures are on the split that chose these "
            "configurations and are biased upward**")


def caveat(agg: pd.DataFrame) -> str:
    """The one line beside figures whose articles are too few for a 95% claim (claims_confidence), or ""."""
    few = agg[(agg["n"] > 0) & ~agg["confident"]]
    if few.empty:
        return ""
    worst = few.sort_values("eff_articles").iloc[0]
    return (f"**Too few held-out articles for confidence:** {int(worst['articles'])} articles, "
            f"{worst['eff_articles']:.1f} effective; below {CONFIDENT_ARTICLES} articles or "
            f"{CONFIDENT_EFFECTIVE_ARTICLES:g} effective, simulated intervals missed their 95% "
            "(docs/statistics.md), so the figures below are descriptive and nothing is claimed from them.")


def table(agg: pd.DataFrame, record: dict) -> list[str]:
    head = ["configuration", "n", "articles (effective)", *[LABEL[k] for k in METRICS],
            *[f"{LABEL[k.split('_minus_')[0]]} - {BASE_LABEL[k.split('_minus_')[1]]}" for k in DIFFS],
            "val margin of the confirmation runs", "verdict (mean)", "robust_pass", "robust_deploy", "gated",
            "errored: NaN loss", "errored: worker failure"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in agg.iterrows():
        cells = [_name(r, record), f"{r['n']}/{r['seeds']}", f"{int(r['articles'])} ({r['eff_articles']:.1f})",
                 *[_iv(r, k) for k in METRICS], *[_iv(r, k, signed=True) for k in DIFFS], f"{r['val_margin']:+.3f}",
                 r["verdict"], str(r["robust_pass"]), str(r["robust_deploy"]), f"{r['gated']}/{r['n']}",
                 str(r["errored_nan"]), str(r["errored_worker"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def recommendation(agg: pd.DataFrame, record: dict) -> str:
    """The closing paragraph: every configuration that beats DIRECT by the deployment margins, or DIRECT at all,
    and every one that beats ridge, with 95% confidence Holm-adjusted over the configurations compared; or, in so
    many words, that none does; or, where the held-out articles are too few (claims_confidence), that nothing can
    be claimed. Errored runs are counted, and their configurations named as not robust."""
    done = agg[agg["n"] > 0]
    if done.empty:
        return "**No confirmation run completed: nothing can be concluded.**"
    errored = int(agg["diverged"].sum()), int(agg["seeds"].sum())
    tail = (f" {errored[0]} of {errored[1]} runs errored ({int(agg['errored_nan'].sum())} NaN loss, "
            f"{int(agg['errored_worker'].sum())} worker failure): {_names(agg[agg['diverged'] > 0], record)} "
            f"{'is' if (agg['diverged'] > 0).sum() == 1 else 'are'} not robust and left out of the comparison."
            if errored[0] else f" No run errored ({errored[1]} runs).")
    if not done["confident"].any():
        return ("**Nothing can be claimed with confidence:** too few held-out articles (see the line above the "
                "table); the figures are descriptive." + tail)
    k = int((agg["diverged"].eq(0) & agg["n"].gt(0) & agg["confident"]).sum())
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
    for b, label in REFERENCES.items():
        if done[f"r_at_5_minus_{b}"].isna().all():  # a confirmation made before this reference
            continue
        beat = done[done[f"beats_{b}"]]
        text += (f" **Beat {label}** {how}: {_names(beat, record)}." if len(beat) else
                 f" **No configuration beats {label} with confidence** (none has both its R@5 and its MRR@10 "
                 f"difference with {label} above 0).")
    return text + tail


def markdown(exp: str) -> str:
    """The "Confirmed" section of summary.md from confirm.parquet, confirm_articles.parquet and confirm.json."""
    stored = Experiment(exp)
    record, articles = stored.plan(), stored.confirmed_articles()
    if articles is None:
        return ("## Confirmed\n\nThis confirmation has no per-article figures (made by an older tune_p7): resume it "
                "with a new --name, or run the confirmation again, to see intervals over runs and articles.")
    rows = stored.confirmed()
    split = heldout_split(articles)
    agg = aggregate(rows, articles, split)
    top, folds = len(record["configs"]), record.get("folds")
    runs = (f"{len(record['seed_values'])} new seeds ({record['seed_values']}) in each of {folds} cross-fitting "
            "folds" if folds else f"{len(record['seed_values'])} new seeds each ({record['seed_values']})")
    intro = (f"The top {top} configuration{'s' * (top != 1)} of the ranked table (ranked on val) trained again at "
             f"their full epochs, {runs}, without early stopping, and scored on {where(split, articles)}"
             + (f", on the windows every one of them can score (those at context length {record['common_context']})"
                if record.get("common_context") else "") +
             ". Each cell: the window mean over the held-out articles, each article's figure the mean of the runs "
             "that scored it [95% cluster-robust t interval: CR2 over articles with Bell-McCaffrey degrees of "
             "freedom, plus the run-to-run variation a fold's articles share; docs/statistics.md]; n: completed "
             "runs; articles (effective): held-out articles with a window and Kish's effective number. Differences "
             "with DIRECT, with ridge and with the kNN-successor (fitted on the same training articles at the "
             "configuration's own context length, tuned on val) are per article on the same windows. robust_pass: every PASS metric's lower bound clears its "
             f"threshold ({', '.join(f'{k} {v:.2f}' for k, v in PASS.items())}); robust_deploy: the lower bounds of "
             f"R@5 - DIRECT and MRR@10 - DIRECT clear +{DEPLOY_R5:.2f} and +{DEPLOY_MRR:.2f}; gated: runs a gate "
             "would have stopped (recorded, not enforced). The val margin of the confirmation runs (their last "
             "epoch) is shown for the winner's curse: the search chose each configuration on val.")
    note = caveat(agg)
    return "\n".join(["## Confirmed", "", intro, "", *([note, ""] if note else []), *table(agg, record), "",
                      recommendation(agg, record)])
