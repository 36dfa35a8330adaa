"""The baseline of ``speedup_vs_naive_fp32``: a plain fp32 PyTorch training loop of the same model, like the
original P7 trainer (written for this benchmark, not copied).

- the data as seed-format tensors ``contexts`` (N, K, D) and ``targets`` (N, D), served one sample at a time by a
  Dataset through a DataLoader (shuffle, per-item collate); each item draws its hard negatives at random;
- the model: the same TransformerRanker (same modules and parameters), its encoder run over every position
  (``encoder(h)[:, -1]``), fp32, no autocast;
- the negative pool built per sample in a Python loop (every other target of the batch), then one bmm;
- AdamW with torch's default CPU implementation, ``.item()`` of every loss part each step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from tune_p7.core.config import P7Config
from tune_p7.data.loading import Split
from tune_p7.core.model import TransformerRanker


class FullEncoderRanker(TransformerRanker):
    """TransformerRanker as a plain loop would run it: nn.Dropout, the encoder over every position, then the last
    one read."""

    def __init__(self, dim, cfg):
        super().__init__(dim, cfg)
        for layer in self.encoder.layers:
            for name in ("dropout", "dropout1", "dropout2"):
                setattr(layer, name, nn.Dropout(getattr(layer, name).p))

    def forward(self, context):
        h = self.proj(context) + self.pos[-context.shape[1]:]
        return self.anchor(self.head(self.encoder(h)[:, -1]), context)


class WindowDataset(Dataset):
    def __init__(self, split: Split, k: int, hard_negatives: int):
        rows = split.windows(k)
        vec = torch.from_numpy(split.chunks).float()
        self.contexts = vec[torch.from_numpy(rows[:, :-1])].contiguous()  # (N, K, D): materialised like the NPZ
        self.targets = vec[torch.from_numpy(rows[:, -1])].contiguous()
        self.h = hard_negatives

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        ctx = self.contexts[i]
        return {"context": ctx, "next": self.targets[i], "prev": ctx[-1],
                "hard": self.targets[torch.randint(0, len(self), (self.h,))]}


def negative_pool(batch) -> torch.Tensor:
    """(B, 1 + h + B - 1, D): prev, hard negatives, and every other target of the batch (a loop per sample)."""
    targets = batch["next"]
    b = targets.shape[0]
    others = []
    for i in range(b):
        idx = torch.cat([torch.arange(i), torch.arange(i + 1, b)])
        others.append(targets[idx])
    return torch.cat([batch["prev"].unsqueeze(1), batch["hard"], torch.stack(others)], dim=1)


def naive_loss(q, batch, negatives, cfg: P7Config, w_teacher: float):
    q = F.normalize(q, dim=-1)
    pos = F.normalize(batch["next"], dim=-1)
    prev = F.normalize(batch["prev"], dim=-1)
    negs = F.normalize(negatives, dim=-1)
    pos_score = (q * pos).sum(-1) / cfg.temperature
    neg_scores = torch.bmm(negs, q.unsqueeze(-1)).squeeze(-1) / cfg.temperature
    nce = (torch.logsumexp(torch.cat([pos_score.unsqueeze(1), neg_scores], 1), 1) - pos_score).mean()
    cos_next, cos_prev = (q * pos).sum(-1), (q * prev).sum(-1)
    hinge = F.relu(cfg.margin - cos_next + cos_prev).mean()
    ctx = batch["context"]
    delta = F.cosine_similarity(ctx[:, -1], pos, dim=-1) - F.cosine_similarity(ctx[:, -1], ctx[:, -2], dim=-1)
    gate = torch.where(delta >= cfg.gate_threshold, torch.ones_like(delta),
                       torch.full_like(delta, cfg.gate_weak_weight)).mean()
    low = cos_next < cfg.teacher_floor
    teacher = (1 - cos_next[low]).mean() if low.any() else torch.zeros(())
    total = cfg.w_rank * nce * gate + cfg.w_margin * hinge * gate + w_teacher * teacher
    return total, {"loss": total, "rank": nce, "margin": hinge, "teacher": teacher, "gate": gate}


class NaiveLoop:
    """``run(steps)`` trains ``steps`` batches (cycling through the DataLoader)."""

    def __init__(self, cfg: P7Config, split: Split, seed: int = 0):
        torch.manual_seed(seed)
        self.cfg = cfg
        self.model = FullEncoderRanker(split.dim, cfg)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.loader = DataLoader(WindowDataset(split, cfg.context_length, cfg.hard_negatives),
                                 batch_size=cfg.batch_size, shuffle=True, num_workers=0, drop_last=True)
        self.it = iter(self.loader)
        self.logged: list[dict] = []

    def _next(self):
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            return next(self.it)

    def run(self, steps: int) -> None:
        self.model.train()
        for _ in range(steps):
            batch = self._next()
            negatives = negative_pool(batch)
            q = self.model(batch["context"]).q
            loss, parts = naive_loss(q, batch, negatives, self.cfg, self.cfg.w_teacher)
            self.opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.opt.step()
            self.logged.append({k: v.item() for k, v in parts.items()})
