"""Training gates: ``gate(result, gates, warmup_epochs)``, a pure function of one epoch's val metrics.

The trainable writes its answer into every result as ``gate`` (None, "drift", "escape" or "margin"), so the
decision is stored with the experiment and survives a restore; ``tuning/schedulers.py`` stops a trial whose result
carries a gate. Ray-free, so that the data probe can run the same gates on the oracle and the ridge baseline.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class Gates:
    """The thresholds of a space's ``gates:`` section."""
    drift: float = 0.05  # stop when cos_anchor < drift, any epoch
    margin: float = 0.10  # stop when val margin < margin, once warm-up + grace epochs are over
    grace_epochs: int = 1
    escape: float | None = None  # stop when val cos_next and cos_prev are both < escape (orthogonal escape); off


def _below(result: Mapping[str, float], key: str, threshold: float) -> bool:
    return not result.get(key, float("nan")) >= threshold  # NaN (or a missing metric) counts as below


def gate(result: Mapping[str, float], gates: Gates, warmup_epochs: int) -> str | None:
    """The first gate that stops this epoch, checked in this order, else None:

    - "drift":  cos_anchor < gates.drift (any epoch);
    - "escape": cos_next < gates.escape and cos_prev < gates.escape (any epoch; only if gates.escape is set): the
      prediction has left both neighbours, the original's orthogonal escape;
    - "margin": val margin < gates.margin, once the epoch is past warm-up + grace (epoch > warmup + grace_epochs).

    NaN compares as failing.
    """
    if _below(result, "cos_anchor", gates.drift):
        return "drift"
    escape = gates.escape
    if escape is not None and _below(result, "cos_next", escape) and _below(result, "cos_prev", escape):
        return "escape"
    if result["epoch"] > warmup_epochs + gates.grace_epochs and _below(result, "margin", gates.margin):
        return "margin"
    return None
