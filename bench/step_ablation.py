"""Which training-step changes pay: each one added in turn, all variants alternated in one run.

    python bench/step_ablation.py [--quick] [--threads 2] [--batch 64]

Variants (default model, ctx 5, 768-d; each is loop.TrainStep with some parts swapped for the old ones in
bench/reference.py):

  before        full-encoder forward, old info_nce mask ((C, C) repeat test + eye), AdamW default (for-each loop)
  +fused_adamw  AdamW(fused=True)
  +nce_mask     info_nce: repeated ids by a stable sort, the diagonal cleared in place (no eye, no (C, C) matrix)
  +last_layer   the last encoder layer computed for the last position only
  +dropout_mask dropout keep masks from float32 uniforms instead of aten bernoulli_
  +dropout_bits dropout keep masks from 16 random bits per element (64-bit draws split in four)
  +clip_in_adamw gradient clipping as fused AdamW's grad_scale instead of clip_grad_norm_  (= tune_p7 now, fp32)
  bf16          the same with bf16 autocast (precision=bf16)

Also checks that the new parts compute the same thing as the old ones (model outputs and gradients in eval mode,
info_nce values), and times info_nce alone at batch 64 / 256 / 1024.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

import tune_p7.losses as L
from common import (alternate, median, paired_ratio, parser, spread, step_loop, synth_split, table, timed,
                    write_result)
from reference import FullEncoderRanker, UniformDropout, info_nce_before, with_dropout
from tune_p7.config import P7Config
from tune_p7.data import SplitTensors
from tune_p7.loop import TrainStep
from tune_p7.model import build_model

NEW_NCE = L.info_nce


def runner(cfg: P7Config, st: SplitTensors, steps: int, *, full_encoder: bool, fused: bool, old_nce: bool,
           bf16: bool, dropout: type[torch.nn.Dropout] | None = None, clip_separately: bool = False):
    torch.manual_seed(0)
    model = FullEncoderRanker(768, cfg) if full_encoder else build_model(cfg, 768)
    if dropout is not None:
        with_dropout(model, dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)
    step = TrainStep(cfg, model, opt, st, bf16)
    step.clip_in_optimizer &= not clip_separately
    loop = step_loop(step, st, cfg.batch_size)

    def run() -> float:
        L.info_nce = info_nce_before if old_nce else NEW_NCE  # p7_loss looks info_nce up at call time
        try:
            return steps * cfg.batch_size / loop(steps)
        finally:
            L.info_nce = NEW_NCE
    return run


def equivalence() -> dict:
    """Max differences between the new and the old computations (fp32)."""
    torch.manual_seed(1)
    cfg = P7Config()
    new = build_model(cfg, 768).eval()
    old = FullEncoderRanker(768, cfg).eval()
    old.load_state_dict(new.state_dict())
    x = F.normalize(torch.randn(16, 5, 768), dim=-1)
    t = torch.randn(16, 768)
    pn, po = new(x), old(x)
    (pn.q * t).sum().backward()
    (po.q * t).sum().backward()
    grad = max(float((a.grad - b.grad).abs().max() / (b.grad.abs().max() + 1e-30))
               for a, b in zip(new.parameters(), old.parameters()))
    nce = 0.0
    for b, c in ((4, 24), (64, 384), (256, 1536)):
        pred, bank = F.normalize(torch.randn(b, 32), dim=-1), F.normalize(torch.randn(c, 32), dim=-1)
        ids = torch.randint(-1, c // 2, (c,))
        ids[:b] = torch.randperm(c)[:b]
        ids[b + 1] = ids[0]
        nce = max(nce, float((NEW_NCE(pred, bank, ids, ids[:b], 0.07) - info_nce_before(pred, bank, ids, ids[:b], 0.07))
                             .abs().max()))
    drop = new.encoder.layers[0].dropout.train()  # the new mask: same keep rate and scale as torch's dropout
    ones = torch.ones(4_000_000)
    y_new, y_old = drop(ones), torch.nn.functional.dropout(ones, drop.p, True)
    return {"model_q_max_abs_diff": float((pn.q - po.q).detach().abs().max()), "model_grad_max_rel_diff": grad,
            "info_nce_max_abs_diff": nce, "dropout_p": drop.p,
            "dropout_keep_fraction_new": float((y_new != 0).float().mean()),
            "dropout_keep_fraction_aten": float((y_old != 0).float().mean()),
            "dropout_kept_value_new": float(y_new.max()), "dropout_kept_value_aten": float(y_old.max())}


def nce_timing(quick: bool) -> list[dict]:
    rows = []
    for b in ((64, 256) if quick else (64, 256, 1024)):
        c = b * 6
        pred = F.normalize(torch.randn(b, 768), dim=-1).requires_grad_()
        bank = F.normalize(torch.randn(c, 768), dim=-1)
        ids = torch.randint(0, 10 * c, (c,))

        def call(fn):
            return lambda: fn(pred, bank, ids, ids[:b], 0.07).mean().backward()
        n = 20 if b < 1024 else 5
        res = alternate({"before": lambda: n / timed(call(info_nce_before), n),
                         "now": lambda: n / timed(call(NEW_NCE), n)}, 5)
        rows.append({"batch": b, "bank": c, "before_ms": 1e3 / median(res["before"]), "now_ms": 1e3 / median(res["now"]),
                     "speedup": paired_ratio(res["now"], res["before"])})
    return rows


def main(argv=None):
    p = parser(__doc__.splitlines()[0], step=True)
    p.add_argument("--rounds", type=int, default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rounds = a.rounds or (4 if a.quick else 10)
    cfg = P7Config(batch_size=a.batch)
    st = SplitTensors(synth_split("train", 120 if a.quick else 300, 40), 5)
    steps = max(1, (128 if a.quick else 384) // a.batch)
    specs = {
        "before": dict(full_encoder=True, fused=False, old_nce=True, bf16=False),
        "+fused_adamw": dict(full_encoder=True, fused=True, old_nce=True, bf16=False, clip_separately=True),
        "+nce_mask": dict(full_encoder=True, fused=True, old_nce=False, bf16=False, clip_separately=True),
        "+last_layer": dict(full_encoder=False, fused=True, old_nce=False, bf16=False, dropout=torch.nn.Dropout,
                            clip_separately=True),
        "+dropout_mask": dict(full_encoder=False, fused=True, old_nce=False, bf16=False, dropout=UniformDropout,
                              clip_separately=True),
        "+dropout_bits": dict(full_encoder=False, fused=True, old_nce=False, bf16=False, clip_separately=True),
        "+clip_in_adamw": dict(full_encoder=False, fused=True, old_nce=False, bf16=False),
        "bf16": dict(full_encoder=False, fused=True, old_nce=False, bf16=True),
    }
    runs = alternate({k: runner(cfg, st, steps, **v) for k, v in specs.items()}, rounds)
    rows, out = [], {}
    prev = None
    for k in specs:
        out[k] = {"seq_s": median(runs[k]), "runs": runs[k], "vs_before": paired_ratio(runs[k], runs["before"]),
                  "vs_previous": paired_ratio(runs[k], runs[prev]) if prev and k != "bf16" else None}
        if k == "bf16":
            out[k]["vs_fp32"] = paired_ratio(runs["bf16"], runs["+clip_in_adamw"])
        rows.append({"variant": k, "seq/s": out[k]["seq_s"], "spread": spread(runs[k]), "x before": out[k]["vs_before"],
                     "x previous": out[k]["vs_previous"] if out[k]["vs_previous"] else out[k].get("vs_fp32", "")})
        prev = k
    print(f"training step, batch {a.batch}, {a.threads} threads, {rounds} alternated rounds")
    print(table(rows))
    eq = equivalence()
    nce = nce_timing(a.quick)
    print("\ninfo_nce alone (forward + backward):")
    print(table(nce))
    print("\nsame maths:", ", ".join(f"{k} {v:.4g}" for k, v in eq.items()))
    write_result("step_ablation", {"threads": a.threads, "batch": a.batch, "rounds": rounds, "variants": out,
                                   "equivalence": eq, "info_nce": nce})


if __name__ == "__main__":
    main()
