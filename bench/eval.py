"""Seconds of one validation pass at seed scale: 11k queries, R@k against the split's 11k+ chunks.

    python bench/eval.py [--quick] [--threads 2]

Times ``Evaluator(val, cfg)(model, bf16)`` exactly as ``fit`` calls it every epoch (forward of every window,
cosines, retrieval ranks against the whole bank), plus the train-subset pass (4096 windows, no retrieval) that
``fit`` also runs every epoch, and the one-off Evaluator construction (DIRECT / centroid baselines). The default
model (768-d, ctx 5). Alternated with the validation pass as it was before (full-encoder forward, retrieval in
blocks of 2048 queries) and with only the retrieval block reverted to 2048.
--quick: one timed round instead of five.
"""
from __future__ import annotations

import time

import torch

from common import alternate, median, paired_ratio, parser, spread, synth_data, table, write_result
from naive import FullEncoderRanker
from tune_p7.core.config import P7Config
import tune_p7.core.loop as loop
from tune_p7.core.fastpath import use_bf16
from tune_p7.core.loop import Evaluator
from tune_p7.core.model import build_model


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--windows", type=int, default=11000, help="validation windows")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    n = a.windows
    cfg = P7Config()
    data = synth_data(train_windows=8000 if a.quick else 20000, val_windows=n)
    bf16 = use_bf16(cfg)
    t = time.perf_counter()
    val = Evaluator(data.val, cfg)
    build_s = time.perf_counter() - t
    train_eval = Evaluator(data.train, cfg, max_windows=cfg.train_eval_windows, retrieval=False)
    torch.manual_seed(0)
    now = build_model(cfg, 768)
    before = FullEncoderRanker(768, cfg)
    before.load_state_dict(now.state_dict())

    def timer(fn, block=loop.RETRIEVAL_BLOCK):
        def run():
            saved, loop.RETRIEVAL_BLOCK = loop.RETRIEVAL_BLOCK, block
            try:
                t = time.perf_counter()
                fn()
                return 1.0 / (time.perf_counter() - t)  # passes per second (higher is better)
            finally:
                loop.RETRIEVAL_BLOCK = saved
        return run

    rounds = 1 if a.quick else 5
    runs = alternate({"val_now": timer(lambda: val(now, bf16)), "val_before": timer(lambda: val(before, bf16), 2048),
                      "val_block2048": timer(lambda: val(now, bf16), 2048),
                      "train_subset_now": timer(lambda: train_eval(now, bf16))}, rounds)
    sec = {k: 1.0 / median(v) for k, v in runs.items()}
    out = {"threads": a.threads, "val_windows": len(val.index), "bank": len(val.bank), "bf16": bf16,
           "eval_seconds": sec["val_now"], "eval_seconds_before": sec["val_before"],
           "speedup_vs_before": paired_ratio(runs["val_now"], runs["val_before"]),
           "eval_seconds_block2048": sec["val_block2048"],
           "speedup_vs_block2048": paired_ratio(runs["val_now"], runs["val_block2048"]),
           "train_subset_seconds": sec["train_subset_now"], "evaluator_build_seconds": build_s,
           "per_epoch_eval_seconds": sec["val_now"] + sec["train_subset_now"], "rounds": rounds}
    rows = [{"what": f"validation pass ({out['val_windows']} queries, bank {out['bank']})", "seconds": sec["val_now"],
             "spread": spread([1 / x for x in runs["val_now"]], ".2f")},
            {"what": "  same, retrieval blocks of 2048 queries", "seconds": sec["val_block2048"],
             "spread": spread([1 / x for x in runs["val_block2048"]], ".2f")},
            {"what": "  same, full-encoder forward and 2048-query blocks (before)", "seconds": sec["val_before"],
             "spread": spread([1 / x for x in runs["val_before"]], ".2f")},
            {"what": f"train-subset pass ({len(train_eval.index)} windows)", "seconds": sec["train_subset_now"],
             "spread": spread([1 / x for x in runs["train_subset_now"]], ".2f")},
            {"what": "Evaluator construction (baselines, once)", "seconds": build_s, "spread": ""}]
    print(f"{a.threads} threads, {rounds} alternated rounds")
    print(table(rows))
    if n >= 11000:
        out["eval_seconds_11k"] = sec["val_now"]
        print(f"\neval_seconds_11k = {sec['val_now']:.2f} s")
    write_result("eval", out, quick=a.quick)


if __name__ == "__main__":
    main()
