"""The training loop: train one config on loaded data, evaluate every epoch, hand each epoch to a callback.

It knows nothing of Ray: ``fit(cfg, data, report)`` runs the same under a Tune trial, from the
``python -m tune_p7.train`` CLI, or in a test. Randomness is derived from (seed, epoch), so an epoch resumed
from a checkpoint replays exactly what an uninterrupted run would have done.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F

from tune_p7 import metrics as M
from tune_p7.config import P7Config
from tune_p7.data import P7Data, Split, SplitTensors
from tune_p7.losses import p7_loss
from tune_p7.model import build_model

Report = Callable[[dict[str, Any], dict[str, Any]], None]


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or Inf: the trial cannot go on."""


def cpu_has_bf16_matrix_unit() -> bool:
    """AMX-BF16 (or AVX512-BF16) present, i.e. bf16 matmuls are faster than fp32 here."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def use_bf16(cfg: P7Config) -> bool:
    if cfg.precision == "auto":
        return cfg.device == "cpu" and cpu_has_bf16_matrix_unit()
    return cfg.precision == "bf16"


def set_threads(cfg: P7Config) -> int:
    n = cfg.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


def epoch_seed(cfg: P7Config, epoch: int) -> int:
    return cfg.seed * 100_003 + epoch


class Evaluator:
    """Metrics of a model on one split: cosines on every window and retrieval against all the split's chunks.

    The DIRECT (ctx[-1] as the prediction) and centroid baselines do not depend on the model: computed once.
    """

    def __init__(self, split: Split, cfg: P7Config, max_windows: int | None = None, retrieval: bool = True):
        self.st = SplitTensors(split, cfg.context_length, cfg.device)
        self.cfg = cfg
        n = len(self.st)
        self.index = torch.arange(n, device=cfg.device)
        if max_windows is not None and n > max_windows:  # a fixed, seeded subset
            g = torch.Generator().manual_seed(cfg.seed)
            self.index = torch.randperm(n, generator=g)[:max_windows].sort().values.to(cfg.device)
        self.retrieval = retrieval
        if retrieval:  # the bank is the split's chunk matrix itself when it is float32 (no copy)
            self.bank = self.st.chunks.float()
            self.baselines = self._baselines()

    def _gather(self, fn):
        out = []
        for i in range(0, len(self.index), self.cfg.eval_batch_size):
            b = self.st.batch(self.index[i:i + self.cfg.eval_batch_size])
            out.append(fn(b))
        return {k: torch.cat([o[k] for o in out]) for k in out[0]}

    def _baselines(self) -> dict[str, float]:
        def queries(b):
            c = F.normalize(b.context.mean(1), dim=-1)
            return {"direct": b.prev, "centroid": c, "cos_direct": (b.prev * b.next).sum(-1),
                    "cos_centroid": (c * b.next).sum(-1), "cos_centroid_prev": (c * b.prev).sum(-1)}

        q = self._gather(queries)
        targets = self.st.windows[self.index, -1]
        out = {"direct_cos_next": float(q["cos_direct"].mean()), "direct_margin": float(q["cos_direct"].mean() - 1),
               "centroid_cos_next": float(q["cos_centroid"].mean()),
               "centroid_margin": float((q["cos_centroid"] - q["cos_centroid_prev"]).mean())}
        out.update(M.retrieval(M.retrieval_ranks(q["direct"], self.bank, targets), "direct_"))
        out.update(M.retrieval(M.retrieval_ranks(q["centroid"], self.bank, targets), "centroid_"))
        return out

    @torch.no_grad()
    def __call__(self, model, bf16: bool) -> dict[str, float]:
        was_training = model.training
        model.eval()

        def step(b):
            with torch.autocast(self.cfg.device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
                p = model(b.context)
            cos = M.cosines(p.q, p.raw, b.context, b.next)
            return {**cos, "q": p.q}

        out = self._gather(step)
        model.train(was_training)
        res = {k: float(v.mean()) for k, v in out.items() if k != "q"}
        if self.retrieval:
            res.update(M.retrieval(M.retrieval_ranks(out["q"], self.bank, self.st.windows[self.index, -1])))
            res.update(self.baselines)
        return res


def fit(cfg: P7Config, data: P7Data, report: Report | None = None, state: dict | None = None) -> list[dict]:
    """Train ``cfg`` on ``data`` for cfg.epochs epochs, starting after ``state['epoch']`` if a checkpoint state
    is given. After every epoch calls ``report(metrics, state)`` (state holds the live tensors: save or copy it
    there); returns the list of epoch metrics.

    If the loss becomes NaN/Inf, reports that epoch with an ``error`` entry and state None, then raises
    NonFiniteLoss.
    """
    threads = set_threads(cfg)
    bf16 = use_bf16(cfg)
    data.check_context(cfg.context_length)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data.dim).to(cfg.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = 0
    best = {"margin": -math.inf, "epoch": 0}
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, best = state["epoch"], state["best"]
    train = SplitTensors(data.train, cfg.context_length, cfg.device)
    val_eval = Evaluator(data.val, cfg)
    train_eval = Evaluator(data.train, cfg, max_windows=cfg.train_eval_windows, retrieval=False)
    n, bsz, h = len(train), min(cfg.batch_size, len(train)), cfg.hard_negatives
    steps = max(n // bsz, 1)
    history = []
    for epoch in range(start + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        torch.manual_seed(epoch_seed(cfg, epoch))  # dropout
        gen = torch.Generator().manual_seed(epoch_seed(cfg, epoch))  # order and hard negatives
        perm = torch.randperm(n, generator=gen).to(cfg.device)  # CPU generator: the same order on any device
        w_teacher = cfg.w_teacher if epoch <= cfg.warmup_epochs else 0.0
        sums: dict[str, torch.Tensor] = {}
        model.train()
        for s in range(steps):
            idx = perm[s * bsz:(s + 1) * bsz]
            b = train.batch(idx)
            with torch.autocast(cfg.device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
                p = model(b.context)
            bank, bank_ids = [b.next, b.prev], [b.ids[:, -1], b.ids[:, -2]]
            if h:
                rows, valid = train.hard_negatives(idx, h, gen)
                bank.append(train.chunks[rows.reshape(-1)].float())
                bank_ids.append(torch.where(valid, rows, -1).reshape(-1))
            loss, parts = p7_loss(p.q, b.next, b.prev, b.prev_gate, torch.cat(bank), torch.cat(bank_ids),
                                  b.ids[:, -1], temperature=cfg.temperature, margin=cfg.margin, w_rank=cfg.w_rank,
                                  w_margin=cfg.w_margin, w_teacher=w_teacher, teacher_floor=cfg.teacher_floor,
                                  gate_threshold=cfg.gate_threshold, gate_weak_weight=cfg.gate_weak_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
        train_seconds = time.perf_counter() - t0
        parts = {k: float(v) / steps for k, v in sums.items()}
        m = {"epoch": epoch, **val_eval(model, bf16)}
        tr = train_eval(model, bf16)
        m.update({"train_margin": tr["margin"], "train_cos_next": tr["cos_next"], **parts,
                  "anchor_lambda": float(model.anchor.lam().detach()), "infonce_chance": M.infonce_chance(2 * bsz + bsz * h),
                  "train_seconds": train_seconds, "sequences_per_second": steps * bsz / train_seconds,
                  "threads": threads, "bf16": bf16})
        if m["margin"] > best["margin"]:
            best = {"margin": m["margin"], "epoch": epoch}
        m["best_margin"], m["best_epoch"] = best["margin"], best["epoch"]
        history.append(m)
        if not math.isfinite(parts["loss"]):  # report the failing epoch (its metrics are NaN), then stop
            m["error"] = f"training loss became {parts['loss']} in epoch {epoch} (lr={cfg.lr})"
            if report is not None:
                report(m, None)
            raise NonFiniteLoss(m["error"])
        if report is not None:
            report(m, {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "best": best,
                       "config": cfg.to_dict()})
    return history
