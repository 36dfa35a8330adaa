"""P7 losses: pure functions of tensors. Inputs are unit vectors, so a dot product is a cosine.

Shapes: B sequences, D dimensions, C bank candidates. Every per-sequence loss returns (B,) so the
directional gate can weight each sequence before the mean.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(pred: torch.Tensor, bank: torch.Tensor, bank_ids: torch.Tensor, pos_ids: torch.Tensor,
             temperature: float) -> torch.Tensor:
    """InfoNCE with one shared candidate bank; the positive of sequence i is bank row i.

        logits[i, j] = pred_i . bank_j / temperature                                   (one (B, D) x (D, C) matmul)
        logits[i, j] = -inf   if j != i and (bank_ids[j] == pos_ids[i]            # a copy of the positive
                                          or bank_ids[j] == bank_ids[j'] for a j' < j  # a repeated negative
                                          or bank_ids[j] < 0)                          # an empty slot
        loss_i = -log softmax(logits[i])[i]

    Masking by chunk id keeps a copy of the positive elsewhere in the bank (another sequence's prev or
    target, a hard negative) from being counted as a negative, and counts every other chunk once.
    pred (B, D), bank (C, D) with C >= B, bank_ids (C,), pos_ids (B,) -> (B,).
    """
    b = pred.shape[0]
    logits = pred @ bank.T / temperature
    # repeated[j]: bank_ids[j] already seen at an earlier j' (a stable sort keeps equal ids in bank order: O(C log C),
    # not a (C, C) comparison)
    ids_sorted, order = torch.sort(bank_ids, stable=True)
    repeated_sorted = torch.zeros_like(ids_sorted, dtype=torch.bool)
    repeated_sorted[1:] = ids_sorted[1:] == ids_sorted[:-1]
    repeated = torch.empty_like(repeated_sorted).scatter_(0, order, repeated_sorted)
    masked = (bank_ids.unsqueeze(0) == pos_ids.unsqueeze(1)) | (bank_ids < 0) | repeated
    masked[:, :b].diagonal().fill_(False)  # never mask the positive itself (j = i)
    logits = logits.masked_fill(masked, float("-inf"))
    return torch.logsumexp(logits, dim=1) - logits.diagonal()


def prev_repel(pred: torch.Tensor, nxt: torch.Tensor, prev: torch.Tensor, margin: float) -> torch.Tensor:
    """Hinge on the directional margin: relu(margin - (cos(pred, next) - cos(pred, prev))).

    pred, nxt, prev (B, D) -> (B,)."""
    return F.relu(margin - ((pred * nxt).sum(-1) - (pred * prev).sum(-1)))


def gate_weights(last: torch.Tensor, before_last: torch.Tensor, nxt: torch.Tensor, threshold: float,
                 weak_weight: float) -> torch.Tensor:
    """Per-sequence directional gate: Delta = cos(ctx[-1], next) - cos(ctx[-1], ctx[-2]);
    weight = weak_weight where Delta < threshold, else 1.

    last = ctx[-1], before_last = ctx[-2], nxt (B, D) -> (B,)."""
    delta = (last * nxt).sum(-1) - (last * before_last).sum(-1)
    return torch.where(delta < threshold, torch.full_like(delta, weak_weight), torch.ones_like(delta))


def teacher_pull(pred: torch.Tensor, nxt: torch.Tensor, floor: float) -> torch.Tensor:
    """Cosine floor: (1 - cos(pred, next)) where cos(pred, next) < floor, else 0. pred, nxt (B, D) -> (B,)."""
    cos = (pred * nxt).sum(-1)
    return torch.where(cos < floor, 1 - cos, torch.zeros_like(cos))


def p7_loss(pred: torch.Tensor, nxt: torch.Tensor, prev: torch.Tensor, before_prev: torch.Tensor,
            bank: torch.Tensor, bank_ids: torch.Tensor, pos_ids: torch.Tensor, *, temperature: float,
            margin: float, w_rank: float, w_margin: float, w_teacher: float, teacher_floor: float,
            gate_threshold: float, gate_weak_weight: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total = mean_i g_i * (w_rank * nce_i + w_margin * hinge_i + w_teacher * pull_i), g = gate_weights.

    The mean is over all B sequences (not over sum(g)), so weak sequences really weigh less. Pass
    w_teacher = 0 after the warm-up. prev = ctx[-1], before_prev = ctx[-2]. Returns (total (), parts), the parts
    detached, for logging: ``loss_rank`` = mean_i nce_i, the plain mean, comparable with ln(C) (a model at chance
    scores ln(C) whatever the gate weights); ``loss_rank_weighted`` = mean_i g_i * nce_i, the term as it enters the
    total; ``loss_margin``, ``loss_teacher`` gate-weighted means likewise; ``gate_mean`` = mean_i g_i.
    """
    g = gate_weights(prev, before_prev, nxt, gate_threshold, gate_weak_weight)
    nce = info_nce(pred, bank, bank_ids, pos_ids, temperature)
    hinge = prev_repel(pred, nxt, prev, margin)
    pull = teacher_pull(pred, nxt, teacher_floor) if w_teacher else torch.zeros_like(g)
    total = (g * (w_rank * nce + w_margin * hinge + w_teacher * pull)).mean()
    parts = {"loss": total, "loss_rank": nce.mean(), "loss_rank_weighted": (g * nce).mean(),
             "loss_margin": (g * hinge).mean(), "loss_teacher": (g * pull).mean(), "gate_mean": g.mean()}
    return total, {k: v.detach() for k, v in parts.items()}
