"""Does torch.compile pay on this CPU? Compile time, then eager vs compiled training steps, alternated.

    python bench/compile.py [--quick] [--threads 2] [--batch 64]

The default model inside tune_p7's TrainStep, once eager and once wrapped in torch.compile (inductor, default
mode). Compile time = the first compiled step minus an eager first step. The full run compiles with an empty
inductor cache (cold); --quick reuses a cache in /tmp (warm after its first run, so usually well under a minute).
"""
from __future__ import annotations

import os
import sys
import tempfile

if __name__ == "__main__":  # the inductor cache must be chosen before torch is imported
    _dir = (os.path.join(tempfile.gettempdir(), "tune_p7_bench_inductor") if "--quick" in sys.argv
            else tempfile.mkdtemp(prefix="tune_p7_inductor_"))
    CACHE_WARM = os.path.isdir(_dir) and bool(os.listdir(_dir))
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = _dir

import time  # noqa: E402

import torch  # noqa: E402

from common import step_loop, alternate, median, paired_ratio, parser, spread, synth_split, table, write_result  # noqa: E402
from tune_p7.config import P7Config  # noqa: E402
from tune_p7.data import SplitTensors  # noqa: E402
from tune_p7.loop import TrainStep, make_optimizer, use_bf16  # noqa: E402
from tune_p7.model import build_model  # noqa: E402


def make(cfg, st, steps, compiled: bool):
    torch.manual_seed(0)
    model = build_model(cfg, 768)
    fwd = torch.compile(model) if compiled else model
    step = TrainStep(cfg, fwd, make_optimizer(cfg, model), st, use_bf16(cfg))
    loop = step_loop(step, st, cfg.batch_size)
    return lambda n=steps: n * cfg.batch_size / loop(n)  # sequences per second


def main(argv=None):
    p = parser(__doc__.splitlines()[0], step=True)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = P7Config(batch_size=a.batch)
    st = SplitTensors(synth_split("train", 100 if a.quick else 300, 40), 5)
    steps = max(1, (128 if a.quick else 384) // a.batch)
    eager = make(cfg, st, steps, False)
    t = time.perf_counter()
    eager(1)
    eager_first = time.perf_counter() - t
    compiled = make(cfg, st, steps, True)
    t = time.perf_counter()
    compiled(1)
    compile_s = time.perf_counter() - t - eager_first
    t = time.perf_counter()
    compiled(1)  # the backward graph may compile on the second call too; count it
    compile_s += max(0.0, time.perf_counter() - t - eager_first)
    rounds = 3 if a.quick else 7
    runs = alternate({"eager": eager, "compiled": compiled}, rounds)
    out = {"threads": a.threads, "batch": a.batch, "rounds": rounds,
           "cache": "warm (reused)" if globals().get("CACHE_WARM") else "cold (empty)",
           "compile_seconds": compile_s, "eager_seq_s": median(runs["eager"]),
           "compiled_seq_s": median(runs["compiled"]), "compiled_vs_eager": paired_ratio(runs["compiled"], runs["eager"])}
    out["kept"] = out["compiled_vs_eager"] > 1.05
    print(table([{"variant": k, "seq/s": median(v), "spread": spread(v), "vs eager": paired_ratio(v, runs["eager"])}
                 for k, v in runs.items()]))
    print(f"\ncompile time {compile_s:.1f} s ({out['cache']} inductor cache); torch.compile "
          f"{'kept' if out['kept'] else 'not used: no measurable gain'}")
    write_result("compile", out)


if __name__ == "__main__":
    main()
