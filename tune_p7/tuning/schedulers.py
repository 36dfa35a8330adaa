"""Trial schedulers that enforce the training gates on top of Ray Tune's own.

Each epoch's result carries ``gate`` (``gates.gate``: None, "drift", "escape" or "margin"), written by the
trainable, so the decision is stored with the experiment and survives ``Tuner.restore``. A scheduler here stops a
trial whose result carries a gate and otherwise defers to the Ray scheduler it extends. A gate stop, like an ASHA
stop, ends the trial TERMINATED; the summary tells them apart by the ``gate`` field.
"""
from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler


class _Gated:
    """Mixin: STOP when the result carries a gate, else the wrapped scheduler's decision. The wrapped scheduler still
    sees every result first, so its own bookkeeping (rungs, brackets, populations) stays whole."""

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        return TrialScheduler.STOP if result.get("gate") else decision


class GatedASHA(_Gated, ASHAScheduler):
    """Asynchronous Successive Halving (ASHA) with the training gates.

    ASHA: Li et al., "A System for Massively Parallel Hyperparameter Tuning", MLSys 2020
    (https://arxiv.org/abs/1810.05934). Trials are compared at rungs of ``grace_period * reduction_factor**k``
    epochs; at each rung a trial goes on only if its ``metric`` is in the top ``1 / reduction_factor`` of the
    results recorded at that rung so far (the first trial to reach a rung always goes on, so decisions depend on
    trial order). On top of that, any result whose ``gate`` is set stops the trial at once, at any epoch.

    Args (those of ``ray.tune.schedulers.ASHAScheduler``; search.py sets them from the space's ``scheduler:``):
        time_attr: the result key that counts progress: ``"epoch"`` (unit: training epochs, 1-based).
        metric: the result key compared at the rungs: the space's ``metric`` (default ``margin``, the val cosine
            margin cos(pred, next) - cos(pred, ctx[-1]), unitless in [-2, 2]).
        mode: ``"max"`` or ``"min"`` for ``metric``.
        max_t: epochs of the longest trial; no trial runs past it (unit: epochs).
        grace_period: epochs every trial runs before its first rung comparison (unit: epochs; >= 1, <= max_t).
        reduction_factor: the halving rate eta (> 1, unitless): 1 / eta of the trials go on at each rung.
        brackets: number of brackets (>= 1), each with a grace period eta times the last.
    """


class GatedFIFO(_Gated, FIFOScheduler):
    """First in, first out: every trial runs all its epochs unless a gate stops it (no early stopping otherwise).
    Takes no arguments."""
