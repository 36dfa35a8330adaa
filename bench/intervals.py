"""Milliseconds per evaluation of the intervals over articles at the seed scale (11k val windows).

    python bench/intervals.py [--quick]

Times ``Evaluator.intervals`` (the cluster-robust intervals of every epoch's val metrics and paired differences)
and the whole validation pass that contains it (forward, cosines, retrieval ranks, intervals), alternated round by
round in one run, with the default model (768-d, ctx 5) on a synthetic split of 24-chunk articles. Prints their ratio.
--quick: 2,000 windows, one timed round.
"""
from __future__ import annotations

import time

import torch

from common import alternate, median, parser, spread, synth_data, table, write_result
from tune_p7.core.config import P7Config
from tune_p7.core.fastpath import use_bf16
from tune_p7.core.loop import Evaluator
from tune_p7.core.model import build_model


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    n = 2000 if a.quick else 11000
    cfg = P7Config()
    data = synth_data(train_windows=4000, val_windows=n)
    bf16 = use_bf16(cfg)
    ev = Evaluator(data.val, cfg)
    model = build_model(cfg, data.dim).eval()
    per_window = ev.per_window(model, bf16)  # the per-window scalars the evaluation keeps, computed once

    def intervals():
        t = time.perf_counter()
        ev.intervals(per_window)
        return 1 / (time.perf_counter() - t)

    def evaluation():
        t = time.perf_counter()
        ev(model, bf16)
        return 1 / (time.perf_counter() - t)

    rounds = alternate({"intervals": intervals, "evaluation": evaluation}, rounds=1 if a.quick else 5)
    ms = {k: [1e3 / r for r in v] for k, v in rounds.items()}
    articles = int(ev.window_article.unique().numel())
    out = {"windows": len(ev.st), "articles": articles, "bf16": bf16, "threads": a.threads,
           "intervals_ms": median(ms["intervals"]), "evaluation_ms": median(ms["evaluation"]),
           "intervals_share_of_evaluation": median([i / e for i, e in zip(ms["intervals"], ms["evaluation"])]),
           "rounds_ms": ms}
    print(table([{"part": k, "median ms": f"{median(v):.1f}", "rounds": spread(v, ".1f")} for k, v in ms.items()]))
    print(f"{out['windows']} windows, {articles} articles: the intervals take "
          f"{out['intervals_share_of_evaluation']:.1%} of a validation pass")
    print(write_result("intervals", out, quick=a.quick))


if __name__ == "__main__":
    main()
