"""Training sequences/s of tune_p7's step for each context length (3, 5, 7) and for the LSTM, alternated.

    python bench/throughput.py [--quick] [--threads 2 1] [--batch 64]

Default sizes (transformer d_model 512, 4 layers; LSTM hidden 512, 2 layers), 768-d, precision auto.
"""
from __future__ import annotations

import torch

from common import alternate, median, parser, spread, synth_split, table, train_flops_per_seq, write_result
from step import tune_p7_runner
from tune_p7.data.batches import SplitTensors
from tune_p7.core.config import P7Config

VARIANTS = {"transformer ctx3": dict(context_length=3), "transformer ctx5": dict(context_length=5),
            "transformer ctx7": dict(context_length=7), "lstm ctx5": dict(arch="lstm", context_length=5)}


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=None)
    p.add_argument("--batch", type=int, default=64)
    a = p.parse_args(argv)
    threads = a.threads or ([2] if a.quick else [2, 1])
    rounds = 4 if a.quick else 8
    split = synth_split("train", 100 if a.quick else 300, 40)
    st = {k: SplitTensors(split, k) for k in (3, 5, 7)}
    steps = max(1, (192 if a.quick else 320) // a.batch)
    rows, out = [], {}
    for t in threads:
        torch.set_num_threads(t)
        runners = {name: tune_p7_runner(P7Config(batch_size=a.batch, **kw), st[kw["context_length"]], steps)
                   for name, kw in VARIANTS.items()}
        runs = alternate(runners, rounds)
        out[t] = {}
        for name, kw in VARIANTS.items():
            cfg = P7Config(batch_size=a.batch, **kw)
            flops = train_flops_per_seq(cfg, 768, a.batch)
            out[t][name] = {"seq_s": median(runs[name]), "runs": runs[name], "train_gflop_per_seq": flops / 1e9,
                            "gflops": median(runs[name]) * flops / 1e9}
            rows.append({"threads": t, "model": name, "seq/s": median(runs[name]), "spread": spread(runs[name]),
                         "GFLOP/s": out[t][name]["gflops"]})
    print(f"batch {a.batch}, {rounds} alternated rounds")
    print(table(rows))
    write_result("throughput", {"batch": a.batch, "rounds": rounds, "threads": out}, quick=a.quick)


if __name__ == "__main__":
    main()
