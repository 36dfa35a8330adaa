"""Is bf16 faster than fp32 on this CPU? Matmuls, the training step and the evaluation forward, alternated.

    python bench/precision.py [--quick] [--threads 2]

``precision: auto`` picks bf16 autocast only where a timed bf16 matmul is >= 1.3x fp32 (tune_p7.core.fastpath.cpu_bf16_is_fast).
This bench shows why: it times 2048^3 and model-shaped matmuls in fp32 / bf16 / fp16, the default model's training
step (tune_p7 TrainStep, precision fp32 vs bf16, batch 64 and 256) and its no-grad forward (batch 1024).
"""
from __future__ import annotations

import time

import torch

from common import (alternate, cpu_info, matmul_gflops, median, paired_ratio, parser, spread, synth_split, table,
                    timed, write_result)
from step import tune_p7_runner
from tune_p7.data.batches import SplitTensors
from tune_p7.core.config import P7Config
from tune_p7.core import fastpath
from tune_p7.core.fastpath import use_bf16
from tune_p7.core.model import build_model


def shaped_matmul(m: int, k: int, n: int, dtype, reps: int = 20):
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    a @ b
    return lambda: 2 * m * k * n * reps / timed(lambda: a @ b, reps) / 1e9


def forward_runner(bf16: bool, x: torch.Tensor, reps: int):
    torch.manual_seed(0)
    model = build_model(P7Config(), 768).eval()

    def run():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            t = time.perf_counter()
            for _ in range(reps):
                model(x)
            return reps * len(x) / (time.perf_counter() - t)
    return run


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rounds = 3 if a.quick else 7
    rows, out = [], {"auto_picks_bf16": use_bf16(P7Config()), "cpu": cpu_info()}
    # matmuls
    # fp16 only where it has a real kernel: some CPUs (e.g. AMD EPYC without avx512_fp16) fall back to a scalar
    # loop at ~1 GFLOP/s, where one 2048^3 call alone would take 15 s
    fp16_probe = shaped_matmul(128, 256, 256, torch.float16, reps=2)()
    out["fp16_probe_gflops"] = fp16_probe
    dtypes = [("fp32", torch.float32), ("bf16", torch.bfloat16)]
    if fp16_probe > 20:
        dtypes.append(("fp16", torch.float16))
    mm = {}
    for name, dt in dtypes:
        mm[f"2048^3 {name}"] = (lambda dt=dt: matmul_gflops(2048, dt))
        mm[f"320x512x2048 {name}"] = shaped_matmul(320, 512, 2048, dt)
    runs = alternate(mm, rounds)
    out["matmul_gflops"] = {k: median(v) for k, v in runs.items()}
    out["bf16_matmul_speedup_check"] = fastpath.bf16_matmul_speedup()  # what precision auto decides on (once)
    for shape in ("2048^3", "320x512x2048"):
        for name, _ in dtypes:
            k = f"{shape} {name}"
            rows.append({"what": f"matmul {k}", "value": median(runs[k]), "unit": "GFLOP/s", "spread": spread(runs[k]),
                         "vs fp32": paired_ratio(runs[k], runs[f"{shape} fp32"])})
    # training step
    st = SplitTensors(synth_split("train", 100 if a.quick else 300, 40), 5)
    out["train"] = {}
    for b in ((64,) if a.quick else (64, 256)):
        n = max(1, (128 if a.quick else 384) // b)
        v = {prec: tune_p7_runner(P7Config(batch_size=b, precision=prec), st, n) for prec in ("fp32", "bf16")}
        r = alternate(v, rounds)
        out["train"][b] = {"fp32_seq_s": median(r["fp32"]), "bf16_seq_s": median(r["bf16"]),
                           "bf16_vs_fp32": paired_ratio(r["bf16"], r["fp32"])}
        for prec in ("fp32", "bf16"):
            rows.append({"what": f"train step batch {b} {prec}", "value": median(r[prec]), "unit": "seq/s",
                         "spread": spread(r[prec]), "vs fp32": paired_ratio(r[prec], r["fp32"])})
    # evaluation forward
    x = torch.nn.functional.normalize(torch.randn(1024, 5, 768), dim=-1)
    r = alternate({"fp32": forward_runner(False, x, 2), "bf16": forward_runner(True, x, 2)}, rounds)
    out["eval_forward"] = {"fp32_seq_s": median(r["fp32"]), "bf16_seq_s": median(r["bf16"]),
                           "bf16_vs_fp32": paired_ratio(r["bf16"], r["fp32"])}
    for prec in ("fp32", "bf16"):
        rows.append({"what": f"eval forward batch 1024 {prec}", "value": median(r[prec]), "unit": "seq/s",
                     "spread": spread(r[prec]), "vs fp32": paired_ratio(r[prec], r["fp32"])})
    if fp16_probe <= 20:
        print(f"fp16 matmul left out: {fp16_probe:.1f} GFLOP/s on a 128x256x256 probe (no fp16 kernel on this CPU)")
    print(f"{a.threads} threads, {rounds} alternated rounds; CPU amx_bf16={out['cpu']['amx_bf16']} "
          f"avx512_bf16={out['cpu']['avx512_bf16']}; precision auto -> {'bf16' if out['auto_picks_bf16'] else 'fp32'}")
    print(table(rows))
    out["bf16_faster"] = out["train"][64]["bf16_vs_fp32"] > 1.0
    write_result("precision", {"threads": a.threads, "rounds": rounds, **out}, quick=a.quick)


if __name__ == "__main__":
    main()
