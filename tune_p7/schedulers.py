"""The schedulers that enforce the training gates (``gates.gate``): a trial whose result carries a gate stops."""
from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler


class _Gated:
    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        return TrialScheduler.STOP if result.get("gate") else decision


class GatedASHA(_Gated, ASHAScheduler):
    """ASHA (time = the reported epoch) that also stops any trial whose result trips a gate."""


class GatedFIFO(_Gated, FIFOScheduler):
    """No early stopping but the gates."""
