"""The gated schedulers stop exactly the results that carry a gate and otherwise defer to ASHA / FIFO."""
from ray.tune.schedulers import TrialScheduler

from tune_p7.tuning.schedulers import GatedASHA, GatedFIFO


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
    assert asha.on_trial_result(None, _Trial(), {**ok, "gate": "escape"}) == TrialScheduler.STOP
