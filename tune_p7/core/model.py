"""P7 rankers: a context encoder, a unit-sphere head and semantic anchoring with a learned lambda."""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from tune_p7.core.config import P7Config
from tune_p7.core.fastpath import Dropout16, last_position


class Prediction(NamedTuple):
    q: torch.Tensor  # (B, D) anchored unit prediction: what every loss and metric uses
    raw: torch.Tensor  # (B, D) unit prediction before anchoring (diagnostics)
    lam: torch.Tensor  # () the anchor weight in use


def anchor_blend(raw: torch.Tensor, context: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """q' = normalize(lam * normalize(raw) + (1 - lam) * normalize(mean_k context)).

    raw (B, D), context (B, K, D), lam () -> (B, D). cos(q', centroid) >= (1-lam)/sqrt(lam^2 + (1-lam)^2) holds
    only when cos(raw, centroid) >= 0; an opposite raw prediction can still give cos(q', centroid) = -1.
    """
    centroid = F.normalize(context.mean(dim=1), dim=-1)
    return F.normalize(lam * F.normalize(raw, dim=-1) + (1 - lam) * centroid, dim=-1)


class Anchor(nn.Module):
    """lam = lo + (hi - lo) * sigmoid(logit); logit is a parameter, so lam is learned."""

    def __init__(self, init: float, lo: float, hi: float):
        super().__init__()
        self.lo, self.hi = lo, hi
        p = 0.5 if hi == lo else min(max((init - lo) / (hi - lo), 1e-4), 1 - 1e-4)
        self.logit = nn.Parameter(torch.tensor(math.log(p / (1 - p))))

    def lam(self) -> torch.Tensor:
        return self.lo + (self.hi - self.lo) * torch.sigmoid(self.logit)

    def forward(self, raw: torch.Tensor, context: torch.Tensor) -> Prediction:
        raw = F.normalize(raw.float(), dim=-1)
        lam = self.lam()
        return Prediction(anchor_blend(raw, context.float(), lam), raw, lam)


def _head(d_model: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.LayerNorm(d_model), nn.Linear(d_model, dim))


class TransformerRanker(nn.Module):
    """Input projection + learned positions + pre-norm transformer encoder; reads the last position."""

    def __init__(self, dim: int, cfg: P7Config):
        super().__init__()
        self.proj = nn.Linear(dim, cfg.d_model)
        self.pos = nn.Parameter(0.02 * torch.randn(cfg.context_length, cfg.d_model))
        layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.dropout, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, norm=nn.LayerNorm(cfg.d_model),
                                             enable_nested_tensor=False)
        for enc_layer in self.encoder.layers:  # the same dropout, a cheaper mask
            enc_layer.dropout, enc_layer.dropout1, enc_layer.dropout2 = (Dropout16(cfg.dropout) for _ in range(3))
        self.head = _head(cfg.d_model, dim)
        self.anchor = Anchor(cfg.lambda_init, cfg.lambda_min, cfg.lambda_max)

    def forward(self, context: torch.Tensor) -> Prediction:
        h = self.proj(context) + self.pos[-context.shape[1]:]
        *first, last = self.encoder.layers
        for layer in first:
            h = layer(h)
        h = self.encoder.norm(last_position(last, h))  # == self.encoder(h)[:, -1], for less work
        return self.anchor(self.head(h), context)


class LSTMRanker(nn.Module):
    """Stacked LSTM over the context; reads the last hidden state."""

    def __init__(self, dim: int, cfg: P7Config):
        super().__init__()
        self.lstm = nn.LSTM(dim, cfg.d_model, cfg.lstm_layers, batch_first=True,
                            dropout=cfg.dropout if cfg.lstm_layers > 1 else 0.0)
        self.head = _head(cfg.d_model, dim)
        self.anchor = Anchor(cfg.lambda_init, cfg.lambda_min, cfg.lambda_max)

    def forward(self, context: torch.Tensor) -> Prediction:
        out, _ = self.lstm(context)
        return self.anchor(self.head(out[:, -1]), context)


def build_model(cfg: P7Config, dim: int) -> nn.Module:
    """The ranker of ``cfg.arch`` for vectors of dimension ``dim``."""
    cls = {"transformer": TransformerRanker, "lstm": LSTMRanker}[cfg.arch]
    return cls(dim, cfg)
