"""Training gates and the schedulers that enforce them.

``gate(result, ...)`` is a pure function of one epoch's metrics. The trainable writes its answer into every
result as ``gate`` (None, "drift" or "margin"), so the decision is stored with the experiment and survives a
restore; the schedulers below stop a trial whose result carries a gate, and otherwise defer to ASHA / FIFO.
"""
from __future__ import annotations

from typing import Mapping

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from tune_p7.space import Gates


def gate(result: Mapping[str, float], gates: Gates, warmup_epochs: int) -> str | None:
    """"drift" if cos_anchor < gates.drift (any epoch); "margin" if the val margin < gates.margin once the
    epoch is past warm-up + grace; else None. NaN compares as failing."""
    if not result.get("cos_anchor", float("nan")) >= gates.drift:
        return "drift"
    if result["epoch"] > warmup_epochs + gates.grace_epochs and not result.get("margin", float("nan")) >= gates.margin:
        return "margin"
    return None


class _Gated:
    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        return TrialScheduler.STOP if result.get("gate") else decision


class GatedASHA(_Gated, ASHAScheduler):
    """ASHA (time = the reported epoch) that also stops any trial whose result trips a gate."""


class GatedFIFO(_Gated, FIFOScheduler):
    """No early stopping but the gates."""
