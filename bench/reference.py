"""The implementations as they were before the speed-ups, kept to measure each change side by side and to check
that the new code computes the same thing (bench/step_ablation.py)."""
from __future__ import annotations

import torch
from torch import nn

from tune_p7.model import TransformerRanker


class UniformDropout(nn.Dropout):
    """The model's dropout before 16-bit masks: keep where a float32 uniform(0, 1) >= p (one 32-bit draw each)."""

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape, device=x.device) >= self.p
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))


def with_dropout(model: TransformerRanker, cls: type[nn.Dropout]) -> TransformerRanker:
    """Put dropout modules of class ``cls`` into the encoder layers."""
    for layer in model.encoder.layers:
        for name in ("dropout", "dropout1", "dropout2"):
            setattr(layer, name, cls(getattr(layer, name).p))
    return model


class FullEncoderRanker(TransformerRanker):
    """TransformerRanker as it was: nn.Dropout, the encoder run over every position, then the last one read."""

    def __init__(self, dim, cfg):
        super().__init__(dim, cfg)
        with_dropout(self, nn.Dropout)

    def forward(self, context):
        h = self.proj(context) + self.pos[-context.shape[1]:]
        return self.anchor(self.head(self.encoder(h)[:, -1]), context)


def info_nce_before(pred, bank, bank_ids, pos_ids, temperature):
    """losses.info_nce before: (C, C) comparison for repeated ids and a (B, C) eye mask."""
    b = pred.shape[0]
    logits = pred @ bank.T / temperature
    eye = torch.zeros_like(logits, dtype=torch.bool)
    eye[:, :b] = torch.eye(b, dtype=torch.bool, device=pred.device)
    repeated = (bank_ids.unsqueeze(0) == bank_ids.unsqueeze(1)).triu(1).any(0)
    masked = ((bank_ids.unsqueeze(0) == pos_ids.unsqueeze(1)) | (bank_ids < 0) | repeated).logical_and(~eye)
    logits = logits.masked_fill(masked, float("-inf"))
    return torch.logsumexp(logits, dim=1) - logits.diagonal()
