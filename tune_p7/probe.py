"""Look at the data before spending compute: ``tune-p7 probe DATA [--context-length K] [--space FILE]``.

For each held-out split, from the windows (ctx[-2], ctx[-1], next) at context length K, the ones the trials see
(the same definition for an article store and an NPZ file, whose chunk rows are not in document order): the
forward signal Delta = mean[cos(ctx[-1], next) - cos(ctx[-1], ctx[-2])] and the adjacent cosine mean
cos(ctx[-1], next), beside the mean cosine of chunk pairs from different articles. Then reference predictors
scored with the trials' metrics on the same bank: DIRECT (copy ctx[-1]), centroid (mean of the context), a
closed-form ridge regression and a kNN-successor (both fitted on train, their hyperparameters chosen on val), and
the oracle (the true next chunk itself). The search's gates and the verdict are run on ridge, the kNN-successor and
the oracle; where they would stop or fail the oracle, ``warnings`` holds one line each (the search prints them
before any trial starts). The share of each split's chunks with a near-duplicate in train says how far a kNN may
flatter itself, and ``closing`` is one sentence on what the references show about learnability.
"""
from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch

from tune_p7 import cli
from tune_p7.core.baselines import judge, oracle, oracle_warnings, references
from tune_p7.core.clustered import (CONFIDENT_ARTICLES, CONFIDENT_EFFECTIVE_ARTICLES, claims_confidence,
                                    effective_articles)
from tune_p7.core.config import P7Config
from tune_p7.core.gates import Gates
from tune_p7.core.loop import Evaluator
from tune_p7.data.loading import P7Data, Split, load
from tune_p7.space.file import load_space
RETRIEVAL = ("r_at_1", "r_at_5", "r_at_10", "mrr_at_10")
RETRIEVAL_ALL = RETRIEVAL + tuple(k + "_xctx" for k in RETRIEVAL)
SHOWN = ("cos_next", "cos_prev", "margin", "cos_anchor", "r_at_5", "mrr_at_10", "r_at_5_xctx", "mrr_at_10_xctx",
         "contrastive_accuracy", "copy_rate", "gate", "verdict")
LABELS = {"knn": "kNN-successor"}
NEAR_DUPLICATE = 0.98  # cosine at or above which a chunk counts as a near-duplicate of a train chunk


def pair_cosines(split: Split, k: int, block: int = 65536) -> dict[str, float]:
    """Delta and the adjacent cosine over the split's windows of context length k, and the random-pair cosine.

    With (a, b, n) = (ctx[-2], ctx[-1], next) of each window: delta = mean(b.n - b.a), adjacent_cos = mean(b.n).
    random_cos is the exact mean of x_i.x_j over all ordered pairs of chunks from different articles,
    (|S|^2 - sum_a |S_a|^2) / (M^2 - sum_a M_a^2), with S the sum of all M chunks and S_a, M_a the sum and
    count of article a's.
    """
    x = torch.from_numpy(split.chunks)
    w = torch.from_numpy(np.ascontiguousarray(split.windows(k)[:, -3:]))
    adjacent, back = [], []
    for i in range(0, len(w), block):
        a, b, n = x[w[i:i + block]].float().unbind(1)
        adjacent.append((b * n).sum(-1))
        back.append((b * a).sum(-1))
    adjacent, back = torch.cat(adjacent), torch.cat(back)
    sums = np.add.reduceat(split.chunks, split.offsets[:-1], axis=0, dtype=np.float64)
    counts = np.diff(split.offsets).astype(np.float64)
    total = sums.sum(0)
    pairs = counts.sum() ** 2 - (counts ** 2).sum()
    rnd = (total @ total - (sums * sums).sum()) / pairs if pairs else float("nan")
    return {"delta": float((adjacent - back).mean()), "adjacent_cos": float(adjacent.mean()),
            "random_cos": float(rnd)}


def near_duplicate_share(chunks: torch.Tensor, train: torch.Tensor, threshold: float = NEAR_DUPLICATE,
                         block_cells: int = 1 << 24) -> float:
    """Share of the rows of ``chunks`` (M, D) whose nearest row of ``train`` (T, D) has cosine >= threshold (unit
    rows: mean_i [max_j x_i.t_j >= threshold]), in blocks of rows (one (block, T) matmul each, block * T <=
    block_cells floats); NaN for M = 0."""
    if not len(chunks):
        return float("nan")
    t = train.float()
    block = max(block_cells // max(len(t), 1), 1)
    hits = sum(int(((chunks[i:i + block].float() @ t.T).amax(1) >= threshold).sum()) if len(t) else 0
               for i in range(0, len(chunks), block))
    return hits / len(chunks)


BASES = ("direct", "centroid")
COSINES = ("cos_next", "cos_prev", "margin", "cos_anchor", "contrastive_accuracy", "copy_rate")


def reference_row(ev: Evaluator, model, gates: Gates, warmup_epochs: int) -> dict:
    """A fitted reference's metrics on ev's split with their intervals and paired differences with DIRECT, the gate
    and verdict the search would give them, and its hyperparameters (chosen on val)."""
    r = ev(model, bf16=False)
    m = {k: r[k] for k in COSINES + RETRIEVAL_ALL}
    m.update({k: v for k, v in r.items() if k.endswith(("_lo", "_hi", "_vs_direct")) and not k.startswith(BASES)})
    return {**m, **judge(m, gates, warmup_epochs), **model.hyperparameters}


def probe(data: P7Data, k: int = 5, gates: Gates = Gates(), warmup_epochs: int = P7Config().warmup_epochs) -> dict:
    """The probe of every held-out split of ``data`` at context length k (a JSON-able dict).

    ``gates`` and ``warmup_epochs`` are the search's: ridge, the kNN-successor and the oracle get the ``gate`` the
    search would give a trial with their val metrics at epoch warmup_epochs + grace_epochs + 1, the first epoch
    past warm-up and grace (so the margin gate applies too), and their ``verdict``. ``warnings``: where the oracle
    would be stopped by a gate (val) or gets FAIL (any split), one line each, starting ``warning:``. ``chosen``:
    the references' hyperparameters and how val chose them; ``closing``: closing_sentence().
    """
    cfg = P7Config(context_length=k, precision="fp32")
    refs = references(data.train, data.val, k)
    train_chunks = torch.from_numpy(data.train.chunks)
    out = {"data": data.source, "context_length": k, "gates": vars(gates), "gate_epoch":
           warmup_epochs + gates.grace_epochs + 1, "warnings": [], "splits": {},
           "chosen": {name: {"criterion": m.choice["criterion"], "windows": m.choice["windows"], **m.hyperparameters}
                      for name, m in refs.items()}}
    for name in ("val", "ood"):
        split = getattr(data, name)
        if split is None:
            continue
        ev = Evaluator(split, cfg)
        base = ev.baselines
        bounds = {b: {k2.removeprefix(b + "_"): v for k2, v in ev.baseline_intervals.items() if k2.startswith(b)}
                  for b in BASES}
        counts = torch.unique(ev.window_article, return_counts=True)[1].numpy()
        orc = oracle(ev)
        orc.update(judge(orc, gates, warmup_epochs))
        out["warnings"] += oracle_warnings(name, orc, gates, gated=name == "val")
        out["splits"][name] = {
            **pair_cosines(split, k), "windows": len(ev.st), "bank": len(ev.bank),
            "articles": len(counts), "eff_articles": effective_articles(counts),
            "near_duplicates": near_duplicate_share(torch.from_numpy(split.chunks), train_chunks),
            "baselines": {
                "direct": {"cos_next": base["direct_cos_next"], "cos_prev": 1.0, "margin": base["direct_margin"],
                           "contrastive_accuracy": base["direct_contrastive_accuracy"],
                           **{m: base["direct_" + m] for m in RETRIEVAL_ALL}, **bounds["direct"]},
                "centroid": {"cos_anchor": 1.0, **{k2.removeprefix("centroid_"): v for k2, v in base.items()
                                                   if k2.startswith("centroid_")}, **bounds["centroid"]},
                **{ref: reference_row(ev, model, gates, warmup_epochs) for ref, model in refs.items()},
            },
            "oracle": orc}
    out["closing"] = closing_sentence(out)
    return out


BEATS = ("r_at_5_vs_direct", "mrr_at_10_vs_direct", "r_at_5_xctx_vs_direct", "mrr_at_10_xctx_vs_direct")


def closing_sentence(result: dict) -> str:
    """One sentence on what the fitted references show on val. A reference beats DIRECT with confidence when the
    95% intervals (over val articles, cluster-robust: tune_p7.core.intervals) of R@5 - DIRECT and MRR@10 - DIRECT
    all lie above 0, in the whole bank and with the query's context left out of it (in the whole bank ctx[-1]
    always outranks DIRECT's target, a handicap that alone would let a predictor no better than DIRECT "beat" it);
    one that does shows that something is learnable here (a direction of travel, or merely the topic an article
    stays in: with each article's chunks shuffled, a kNN that averages its neighbours' next chunks can still beat
    copying the last one), none doing so shows only that these references cannot beat DIRECT, not that nothing can
    be learned. Where val has too few articles for a 95% claim (claims_confidence), the sentence says so instead."""
    val = result["splits"]["val"]
    refs = {name: m for name, m in val["baselines"].items() if name not in BASES}
    size = f"{val['articles']} articles, {val['eff_articles']:.1f} effective"
    if not claims_confidence(val["articles"], val["eff_articles"]):
        return (f"On val ({size}) no claim is made either way: below {CONFIDENT_ARTICLES} articles or "
                f"{CONFIDENT_EFFECTIVE_ARTICLES:g} effective, simulated 95% intervals missed their 95% "
                "(docs/statistics.md), so whether anything here beats DIRECT is left open; a trained model can still "
                "learn what these references cannot.")
    beat = [name for name, m in refs.items() if all(m.get(k + "_lo", math.nan) > 0 for k in BEATS)]
    if beat:
        bounds = "; ".join(f"{LABELS.get(n, n)} R@5 - DIRECT >= {refs[n]['r_at_5_vs_direct_lo']:+.3f}, "
                           f"MRR@10 - DIRECT >= {refs[n]['mrr_at_10_vs_direct_lo']:+.3f}" for n in beat)
        return (f"On val ({size}), {_names(beat)} "
                f"{'beats' if len(beat) == 1 else 'beat'} DIRECT with confidence, in the whole bank and with the "
                f"query's context left out (lower bounds of the 95% intervals in the whole bank: {bounds}), so "
                "something is learnable here that predicts the next chunk better than copying the last one (a "
                "direction of travel, or the topic an article stays in: these references do not tell which).")
    return (f"On val ({size}), {'neither ' if len(refs) == 2 else 'none of '}"
            f"{_names(list(refs), 'nor' if len(refs) == 2 else 'and')} beats DIRECT with confidence, which says only "
            "that these references do not: a trained model can still learn what they cannot (for example where each "
            "article follows its own trajectory).")


def _names(names: list[str], conj: str = "and") -> str:
    labels = [LABELS.get(n, n) for n in names]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + f" {conj} {labels[-1]}"


def _cell(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def markdown(result: dict) -> str:
    """The probe as a Markdown section (the warnings are left to the caller: the summary shows them on top)."""
    lines = [f"## Data probe (context length {result['context_length']})", ""]
    for name, s in result["splits"].items():
        lines += [f"**{name}**: {s['windows']} windows, bank of {s['bank']} chunks (chance R@5 = "
                  f"{5 / s['bank']:.4f}). Forward signal Delta = {s['delta']:+.4f}; adjacent chunks "
                  f"cos(ctx[-1], next) {s['adjacent_cos']:.3f} vs random pairs {s['random_cos']:.3f}. `_xctx`: "
                  "retrieval with the query's own context chunks left out of the bank; gate and verdict as the "
                  f"search would give them at epoch {result['gate_epoch']}.", "",
                  "| predictor | " + " | ".join(SHOWN) + " |", "|---" * (len(SHOWN) + 1) + "|"]
        for b, m in {**s["baselines"], "oracle (true next)": s["oracle"]}.items():
            lines.append(f"| {LABELS.get(b, b)} | " + " | ".join(_cell(m[c]) if c in m else "" for c in SHOWN) + " |")
        lines += ["", f"{s['near_duplicates']:.1%} of the {name} chunks have a near-duplicate in train (cosine >= "
                      f"{NEAR_DUPLICATE:g}): a kNN that finds them flatters itself.", ""]
    lines += [chosen_line(result["chosen"]), "", result["closing"], ""]
    return "\n".join(lines)


def chosen_line(chosen: dict) -> str:
    """How the references' hyperparameters were chosen, in words."""
    parts = []
    for name, c in chosen.items():
        if name == "ridge":
            parts.append(f"ridge alpha_scale {c['alpha_scale']:g}")
        else:
            weights = "uniform vote" if c["temperature"] is None else f"softmax vote, temperature {c['temperature']:g}"
            parts.append(f"{LABELS.get(name, name)} {c['neighbours']} neighbours, {weights}")
    first = next(iter(chosen.values()))
    return (f"Fitted on train, chosen on val (by {first['criterion']} over {first['windows']} windows): "
            + "; ".join(parts) + ".")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tune-p7 probe", description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="article store, NPZ train file or folder")
    p.add_argument("--context-length", type=int, default=5)
    p.add_argument("--space", help="judge ridge and the oracle with this search space's gates and warm-up "
                                   "[default: the default gates and warm-up]")
    p.add_argument("--json", help="also write the probe as JSON here")
    a = p.parse_args(argv)
    gates, warmup = Gates(), P7Config().warmup_epochs
    if a.space:
        space = load_space(a.space)
        gates, warmup = space.gates, max(space.values_of("warmup_epochs"))
    data = load(a.data)
    data.check_context(a.context_length)
    result = probe(data, a.context_length, gates, warmup)
    print(markdown(result))
    for line in result["warnings"]:
        print(line)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    cli.run(main)
