"""Where a training step's time goes besides the matmuls: the step, its forward, its dropout, its optimizer part and
its autocast casts.

    python bench/step_parts.py [--quick] [--threads 2] [--batch 64]

The default model in loop.TrainStep (precision auto), after warm-up steps: the median time of a whole step; of the
forward in training mode and without dropout (eval mode), under autocast as TrainStep runs it; of
TrainStep.update alone (gradient clipping inside fused AdamW and the AdamW step, on the last step's gradients); and
of casting every weight matrix to bf16 once (what autocast does in each forward when bf16 is on). Not part of
run_all.py.
"""
from __future__ import annotations

import time

import torch

from common import parser, synth_split, table, write_result
from tune_p7.config import P7Config
from tune_p7.data import SplitTensors
from tune_p7.loop import TrainStep, make_optimizer, use_bf16
from tune_p7.model import build_model


def median_ms(fn, n: int) -> float:
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[n // 2] * 1000


def main(argv=None):
    p = parser(__doc__.splitlines()[0], step=True)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    n = 10 if a.quick else 40
    cfg = P7Config(batch_size=a.batch)
    st = SplitTensors(synth_split("train", 100, 40), 5)
    torch.manual_seed(0)
    model = build_model(cfg, 768)
    opt = make_optimizer(cfg, model)
    bf16 = use_bf16(cfg)
    step = TrainStep(cfg, model, opt, st, bf16)
    gen = torch.Generator().manual_seed(0)
    idx = torch.arange(a.batch)
    for _ in range(5):
        step(idx, gen, cfg.w_teacher)
    params = [q for q in model.parameters() if q.requires_grad]
    context = st.batch(idx).context

    def forward(train: bool):
        def run():
            model.train(train)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                model(context)
        return run

    weights = [q for q in params if q.dim() == 2]
    out = {"threads": a.threads, "batch": a.batch, "bf16": bf16, "params": sum(q.numel() for q in params),
           "step_ms": median_ms(lambda: step(idx, gen, cfg.w_teacher), n),
           "forward_ms": median_ms(forward(True), n), "forward_without_dropout_ms": median_ms(forward(False), n),
           "clip_and_adamw_ms": median_ms(step.update, n),
           "bf16_weight_casts_ms": median_ms(lambda: [w.to(torch.bfloat16) for w in weights], n)}
    model.train()
    out["clip_and_adamw_share"] = out["clip_and_adamw_ms"] / out["step_ms"]
    print(table([{"what": k, "value": v} for k, v in out.items() if k.endswith(("_ms", "_share"))]))
    write_result("step_parts", out)


if __name__ == "__main__":
    main()
