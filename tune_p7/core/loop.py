"""The training loop: train one config on loaded data, evaluate every epoch, hand each epoch to a callback.

It knows nothing of Ray: ``fit(cfg, data, report)`` runs the same under a Tune trial, from the
``python -m tune_p7.train`` CLI, or in a test. Randomness is derived from (seed, epoch), so an epoch resumed
from a checkpoint does exactly what an uninterrupted run would have done.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from tune_p7.core import intervals as I
from tune_p7.core import metrics as M
from tune_p7.core.config import P7Config
from tune_p7.core.fastpath import RETRIEVAL_BLOCK, AdamW, clip_and_step, release_free_memory, use_bf16
from tune_p7.core.losses import p7_loss
from tune_p7.core.model import build_model
from tune_p7.data.batches import Batch, SplitTensors
from tune_p7.data.folds import window_mask
from tune_p7.data.loading import P7Data, Split

Report = Callable[[dict[str, Any], dict[str, Any]], None]
Schedule = list[tuple[int, dict[str, Any]]]  # (first epoch, the config keys that change there), epochs ascending


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or Inf: the trial cannot go on."""


def set_threads(cfg: P7Config) -> int:
    n = cfg.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


def epoch_seed(cfg: P7Config, epoch: int) -> int:
    return cfg.seed * 100_003 + epoch


class Evaluator:
    """Metrics of a model on one split: cosines on every window and retrieval against all the split's chunks.

    The DIRECT (ctx[-1] as the prediction) and centroid baselines do not depend on the model: computed once.
    Streams: each batch of eval_batch_size windows is gathered, predicted, scored against the bank (ranks) and
    dropped, so only per-window scalars accumulate; no (windows, D) matrix is ever built. Retrieval is reported
    twice: against the whole bank (``r_at_5``...: the deployment check's, as the seed defines it) and with the
    query's own context chunks left out (``r_at_5_xctx``...), where ctx[-1] no longer outranks the target.
    ``tensors``: reuse a SplitTensors of the same split and context length (fit shares the training one: no second
    window table).
    """

    def __init__(self, split: Split, cfg: P7Config, max_windows: int | None = None, retrieval: bool = True,
                 tensors: SplitTensors | None = None, keep: np.ndarray | None = None):
        self.st = tensors if tensors is not None else SplitTensors(split, cfg.context_length, cfg.device)
        self.cfg = cfg
        n = len(self.st)
        self.index = torch.arange(n, device=cfg.device)
        if keep is not None:  # (N,) bool over the split's windows: only these are scored (folds.window_mask)
            self.index = self.index[torch.from_numpy(keep).to(cfg.device)]
            n = len(self.index)
        if max_windows is not None and n > max_windows:  # a fixed, seeded subset
            g = torch.Generator().manual_seed(cfg.seed)
            self.index = torch.randperm(n, generator=g)[:max_windows].sort().values.to(cfg.device)
        self.retrieval = retrieval
        if retrieval:  # the bank: the split's chunk matrix itself (shared, zero-copy), whatever its dtype
            self.bank = self.st.chunks
            self.baselines = self._baselines()
        release_free_memory()

    def gather(self, fn):
        """fn(batch, target rows) -> dict of (B,) tensors, over the windows in self.index; concatenated."""
        out = []
        for i in range(0, len(self.index), self.cfg.eval_batch_size):
            idx = self.index[i:i + self.cfg.eval_batch_size]
            out.append(fn(self.st.batch(idx), self.st.windows[idx, -1]))
        return {k: torch.cat([o[k] for o in out]) for k in out[0]}

    @staticmethod
    def _ranks(queries: torch.Tensor, bank: torch.Tensor, b: Batch, targets: torch.Tensor, name: str = "rank"):
        """{name: ranks in the whole bank, name_xctx: ranks with the window's context chunks left out}."""
        ranks = M.retrieval_ranks_xctx(queries.contiguous(), bank, targets, b.ids[:, :-1], RETRIEVAL_BLOCK)
        return dict(zip((name, name + "_xctx"), ranks))

    def _bank32(self) -> torch.Tensor:
        """The bank as float32 for one pass: the shared matrix itself if float32, else a copy that lives only
        while the pass runs (a float16 store's bank is not kept as a float32 copy in every trial)."""
        return self.bank.float()

    def _baselines(self) -> dict[str, float]:
        bank = self._bank32()

        def queries(b, targets):
            c = F.normalize(b.context.mean(1), dim=-1)
            return {"cos_direct": (b.prev * b.next).sum(-1), "cos_centroid": (c * b.next).sum(-1),
                    "cos_centroid_prev": (c * b.prev).sum(-1), **self._ranks(b.prev, bank, b, targets, "direct"),
                    **self._ranks(c, bank, b, targets, "centroid")}

        q = self.gather(queries)
        # per-window scalars kept for the intervals (the model's paired differences with DIRECT, DIRECT's own)
        self.direct_hits, self.direct_hits_xctx = I.hits(q["direct"]), I.hits(q["direct_xctx"])
        self.direct_cos, self.direct_cos_anchor = q["cos_direct"], q["cos_centroid_prev"]
        self.direct_contrastive = M.contrastive_accuracy(q["direct"], len(bank))
        self.centroid_hits = I.hits(q["centroid"])
        centroid_contrastive = M.contrastive_accuracy(q["centroid"], len(bank))
        centroid_copy = (q["cos_centroid_prev"] > q["cos_centroid"]).double()  # M.copy_rate from its two cosines
        cols = {"direct_cos_next": q["cos_direct"], **{"direct_" + k: v for k, v in self.direct_hits.items()},
                "direct_contrastive_accuracy": self.direct_contrastive,
                "centroid_cos_next": q["cos_centroid"], "centroid_margin": q["cos_centroid"] - q["cos_centroid_prev"],
                **{"centroid_" + k: v for k, v in self.centroid_hits.items()},
                "centroid_contrastive_accuracy": centroid_contrastive, "centroid_copy_rate": centroid_copy}
        self.baseline_intervals = I.interval_keys(cols, self.window_article)
        out = {"direct_cos_next": float(q["cos_direct"].mean()), "direct_margin": float(q["cos_direct"].mean() - 1),
               "direct_contrastive_accuracy": float(self.direct_contrastive.mean()),
               "centroid_cos_next": float(q["cos_centroid"].mean()),
               "centroid_margin": float((q["cos_centroid"] - q["cos_centroid_prev"]).mean()),
               "centroid_contrastive_accuracy": float(centroid_contrastive.mean()),
               "centroid_copy_rate": float(centroid_copy.mean())}
        for name in ("direct", "centroid"):
            out.update(M.retrieval(q[name], name + "_"))
            out.update(M.retrieval(q[name + "_xctx"], name + "_", "_xctx"))
        return out

    @property
    def window_article(self) -> torch.Tensor:
        """(N,) the article of each evaluated window: the intervals' clusters."""
        return self.st.window_article[self.index]

    def intervals(self, out: dict[str, torch.Tensor]) -> dict[str, float]:
        """95% cluster-robust intervals over articles (tune_p7.core.intervals) of the model's val metrics and of its
        paired differences with DIRECT (same windows, same articles) in the whole bank (``_vs_direct``) and with each
        query's context left out of it (``_xctx_vs_direct``)."""
        model, model_xctx = I.hits(out["rank"]), I.hits(out["rank_xctx"])
        cols = {k: out[k] for k in ("margin", "cos_next", "cos_anchor", "contrastive_accuracy", "copy_rate")}
        cols.update(model)
        cols["r_at_5_xctx"] = model_xctx["r_at_5"]
        diffs = []
        for k in ("r_at_5", "mrr_at_10"):
            cols[k + "_vs_direct"] = model[k] - self.direct_hits[k]
            cols[k + "_xctx_vs_direct"] = model_xctx[k] - self.direct_hits_xctx[k]
            diffs += [k + "_vs_direct", k + "_xctx_vs_direct"]
        res = I.interval_keys(cols, self.window_article)
        res.update({k: float(cols[k].mean()) for k in diffs})
        return res

    @torch.no_grad()
    def per_window(self, model, bf16: bool) -> dict[str, torch.Tensor]:
        """(N,) per-window scalars of ``model`` over the evaluated windows: M.cosines' keys, ``copy_rate`` and, with
        retrieval, ``rank``, ``rank_xctx`` and ``contrastive_accuracy``."""
        was_training = model.training
        model.eval()
        bank = self._bank32() if self.retrieval else None

        def step(b, targets):
            with torch.autocast(self.cfg.device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
                p = model(b.context)
            out = M.cosines(p.q, p.raw, b.context, b.next)
            out["copy_rate"] = M.copy_rate(p.q.float(), b.prev, b.next)
            if self.retrieval:
                out.update(self._ranks(p.q, bank, b, targets))
                out["contrastive_accuracy"] = M.contrastive_accuracy(out["rank"], len(bank))
            return out

        out = self.gather(step)
        model.train(was_training)
        return out

    def article_sums(self, model, bf16: bool) -> dict[str, torch.Tensor]:
        """Per-article sums of the per-window scalars whose means the confirmation reports, for ``model`` and for
        DIRECT on the same windows: {"article": (A,) article ids, "count": (A,) windows, <key>: (A,) sums} for margin,
        cos_next, cos_anchor, r_at_5, mrr_at_10, contrastive_accuracy and "direct_" + each of them, and copy_rate.
        Needs retrieval."""
        out = self.per_window(model, bf16)
        cols = {k: out[k] for k in ("margin", "cos_next", "cos_anchor", "contrastive_accuracy", "copy_rate")}
        cols.update(I.hits(out["rank"]))
        cols.update({"direct_margin": self.direct_cos - 1, "direct_cos_next": self.direct_cos,
                     "direct_cos_anchor": self.direct_cos_anchor,
                     "direct_contrastive_accuracy": self.direct_contrastive,
                     **{"direct_" + k: v for k, v in self.direct_hits.items()}})
        article, inv = torch.unique(self.window_article, return_inverse=True)
        sums = {k: torch.zeros(len(article), dtype=torch.float64).index_add_(0, inv, v.double())
                for k, v in cols.items()}
        return {"article": article, "count": torch.bincount(inv, minlength=len(article)), **sums}

    def __call__(self, model, bf16: bool) -> dict[str, float]:
        out = self.per_window(model, bf16)
        res = {k: float(v.mean()) for k, v in out.items() if not k.startswith("rank")}
        if self.retrieval:
            res.update(M.retrieval(out["rank"]))
            res.update(M.retrieval(out["rank_xctx"], suffix="_xctx"))
            res.update(self.baselines)
            res.update(self.baseline_intervals)
            res.update(self.intervals(out))
        release_free_memory()
        return res


def make_optimizer(cfg: P7Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW (fastpath's, which imports no torch._dynamo); the fused kernel on CPU/CUDA (one pass over each tensor
    instead of ~10 ops per parameter)."""
    fused = torch.device(cfg.device).type in ("cpu", "cuda") or None
    return AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


class TrainStep:
    """One optimisation step of ``fit``: gather the batch and its hard negatives, forward (bf16 autocast if asked),
    P7 loss against the shared bank, backward, gradient clipping, AdamW. ``step(idx, gen, w_teacher)`` returns the
    detached loss parts. A class of its own so that bench/ times exactly what ``fit`` runs.
    """

    def __init__(self, cfg: P7Config, model: torch.nn.Module, opt: torch.optim.Optimizer, train: SplitTensors,
                 bf16: bool):
        self.cfg, self.model, self.opt, self.train, self.bf16 = cfg, model, opt, train, bf16
        self.params = [p for p in model.parameters() if p.requires_grad]

    def __call__(self, idx: torch.Tensor, gen: torch.Generator, w_teacher: float) -> dict[str, torch.Tensor]:
        cfg, train, h = self.cfg, self.train, self.cfg.hard_negatives
        b = train.batch(idx)
        with torch.autocast(cfg.device.split(":")[0], dtype=torch.bfloat16, enabled=self.bf16):
            p = self.model(b.context)
        bank, bank_ids = [b.next, b.prev], [b.ids[:, -1], b.ids[:, -2]]
        if h:
            rows, valid = train.hard_negatives(idx, h, gen)
            bank.append(train.chunks[rows.reshape(-1)].float())
            bank_ids.append(torch.where(valid, rows, -1).reshape(-1))
        loss, parts = p7_loss(p.q, b.next, b.prev, b.prev_gate, torch.cat(bank), torch.cat(bank_ids),
                              b.ids[:, -1], temperature=cfg.temperature, margin=cfg.margin, w_rank=cfg.w_rank,
                              w_margin=cfg.w_margin, w_teacher=w_teacher, teacher_floor=cfg.teacher_floor,
                              gate_threshold=cfg.gate_threshold, gate_weak_weight=cfg.gate_weak_weight)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.update()
        return parts

    def update(self) -> None:
        """Clip the gradients to norm cfg.grad_clip and take the AdamW step."""
        clip_and_step(self.opt, self.params, self.cfg.grad_clip)


def config_at(cfg: P7Config, schedule: Schedule | None, epoch: int) -> P7Config:
    """The config epoch ``epoch`` trains with: ``cfg`` with every change of ``schedule`` that starts at or before
    it applied in order (a population search's schedule followed; no schedule: ``cfg`` itself)."""
    for first, changes in schedule or ():
        if first <= epoch:
            cfg = cfg.replace(**changes)
    return cfg


def article_tables(cfg: P7Config, data: P7Data, model_state: dict, bf16: bool,
                   common_context: int | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Evaluator.article_sums of the model in ``model_state`` on val and, where the data has one, on the held-out
    split (keyed by its name: "ood", or a cross-fitting fold's): what a confirmation run stores for the intervals
    over runs and articles. ``common_context``: only the windows that exist at that context length too."""
    model = build_model(cfg, data.dim).to(cfg.device)
    model.load_state_dict(model_state)
    return model_article_tables(model, split_evaluators(cfg, data, common_context), bf16)


def split_evaluators(cfg: P7Config, data: P7Data, common_context: int | None = None) -> dict[str, "Evaluator"]:
    """{split name: evaluator_on} for val and, where the data has one, the held-out split: built once, they score
    any number of predictors (each builds its bank and DIRECT's ranks)."""
    splits = [data.val] + ([data.ood] if data.ood is not None else [])
    return {split.name: evaluator_on(split, cfg, common_context) for split in splits}


def model_article_tables(model, evaluators: dict[str, "Evaluator"], bf16: bool) -> dict[str, dict[str, torch.Tensor]]:
    """article_tables of any predictor module (a reference predictor of core/baselines.py too) on split_evaluators."""
    return {name: ev.article_sums(model, bf16) for name, ev in evaluators.items()}


def evaluator_on(split: Split, cfg: P7Config, common_context: int | None = None) -> "Evaluator":
    """An Evaluator of ``split`` at cfg's context length, on the windows that also exist at ``common_context``."""
    keep = None if common_context is None else window_mask(split, cfg.context_length, common_context)
    return Evaluator(split, cfg, keep=keep)


def fit(cfg: P7Config, data: P7Data, report: Report | None = None, state: dict | None = None,
        schedule: Schedule | None = None) -> list[dict]:
    """Train ``cfg`` on ``data`` for cfg.epochs epochs, starting after ``state['epoch']`` if a checkpoint state
    is given. After every epoch calls ``report(metrics, state)`` (state holds the live tensors: save or copy it
    there); returns the list of epoch metrics. ``schedule`` changes keys of the config from given epochs on
    (config_at; the optimizer's lr and weight decay follow): a PBT trial's hyperparameter schedule, followed.

    If the loss becomes NaN/Inf, reports that epoch with an ``error`` entry and state None, then raises
    NonFiniteLoss.
    """
    threads = set_threads(cfg)
    bf16 = use_bf16(cfg)
    data.check_context(cfg.context_length)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data.dim).to(cfg.device)
    opt = make_optimizer(cfg, model)
    start = 0
    best = {"margin": -math.inf, "epoch": 0}
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])  # which restores the saved lr and weight decay too:
        for group in opt.param_groups:  # this config's apply from here on (a PBT exploit changes them)
            group["lr"], group["weight_decay"] = cfg.lr, cfg.weight_decay
        start, best = state["epoch"], state["best"]
    train = SplitTensors(data.train, cfg.context_length, cfg.device)
    val_eval = Evaluator(data.val, cfg)
    train_eval = Evaluator(data.train, cfg, max_windows=cfg.train_eval_windows, retrieval=False, tensors=train)
    n, bsz, h = len(train), min(cfg.batch_size, len(train)), cfg.hard_negatives
    steps = max(n // bsz, 1)
    step = TrainStep(cfg, model, opt, train, bf16)
    history = []
    base = cfg
    for epoch in range(start + 1, cfg.epochs + 1):
        if schedule:
            cfg = step.cfg = config_at(base, schedule, epoch)
            for group in opt.param_groups:
                group["lr"], group["weight_decay"] = cfg.lr, cfg.weight_decay
        t0 = time.perf_counter()
        torch.manual_seed(epoch_seed(cfg, epoch))  # dropout
        gen = torch.Generator().manual_seed(epoch_seed(cfg, epoch))  # order and hard negatives
        perm = torch.randperm(n, generator=gen).to(cfg.device)  # CPU generator: the same order on any device
        w_teacher = cfg.w_teacher if epoch <= cfg.warmup_epochs else 0.0
        sums: dict[str, torch.Tensor] = {}
        model.train()
        for s in range(steps):
            for k, v in step(perm[s * bsz:(s + 1) * bsz], gen, w_teacher).items():
                sums[k] = sums.get(k, 0.0) + v
        train_seconds = time.perf_counter() - t0
        parts = {k: float(v) / steps for k, v in sums.items()}
        t1 = time.perf_counter()
        m = {"epoch": epoch, **val_eval(model, bf16)}
        tr = train_eval(model, bf16)
        eval_seconds = time.perf_counter() - t1
        m.update({"train_margin": tr["margin"], "train_cos_next": tr["cos_next"], **parts,
                  "anchor_lambda": float(model.anchor.lam().detach()), "infonce_chance": M.infonce_chance(2 * bsz + bsz * h),
                  "train_seconds": train_seconds, "eval_seconds": eval_seconds,
                  "sequences_per_second": steps * bsz / train_seconds,
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
