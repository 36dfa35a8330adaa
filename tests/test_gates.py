"""The gate is a pure function of one epoch's metrics; the scheduler stops exactly the gated results."""
import math

from ray.tune.schedulers import TrialScheduler

from tune_p7.gates import GatedASHA, GatedFIFO, gate
from tune_p7.space import Gates

G = Gates(drift=0.05, margin=0.10, grace_epochs=1)


def res(epoch, margin=0.3, cos_anchor=0.5):
    return {"epoch": epoch, "margin": margin, "cos_anchor": cos_anchor}


def test_drift_gate_at_any_epoch():
    assert gate(res(1, cos_anchor=0.04), G, warmup_epochs=2) == "drift"
    assert gate(res(1, cos_anchor=math.nan), G, warmup_epochs=2) == "drift"


def test_margin_gate_only_after_warmup_and_grace():
    assert gate(res(3, margin=0.0), G, warmup_epochs=2) is None  # epoch 3 = warm-up 2 + grace 1
    assert gate(res(4, margin=0.0), G, warmup_epochs=2) == "margin"
    assert gate(res(4, margin=math.nan), G, warmup_epochs=2) == "margin"
    assert gate(res(4, margin=0.10), G, warmup_epochs=2) is None


class _Trial:
    trial_id = "t0"


def test_schedulers_stop_gated_results():
    fifo = GatedFIFO()
    assert fifo.on_trial_result(None, _Trial(), {"gate": "drift"}) == TrialScheduler.STOP
    assert fifo.on_trial_result(None, _Trial(), {"gate": None}) == TrialScheduler.CONTINUE
    asha = GatedASHA(time_attr="training_iteration", metric="margin", mode="max", max_t=10, grace_period=5)
    asha.on_trial_add(None, _Trial())
    ok = {"training_iteration": 1, "margin": 0.3, "gate": None}
    assert asha.on_trial_result(None, _Trial(), ok) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, _Trial(), {**ok, "gate": "margin"}) == TrialScheduler.STOP
