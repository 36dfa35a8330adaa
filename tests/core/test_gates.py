"""The gate is a pure function of one epoch's metrics, importable without Ray."""
import math
import subprocess
import sys

from tune_p7.core.gates import Gates, gate

G = Gates(drift=0.05, margin=0.10, grace_epochs=1)
E = Gates(drift=0.05, margin=0.10, grace_epochs=1, escape=0.1)


def res(epoch, margin=0.3, cos_anchor=0.5, cos_next=0.6, cos_prev=0.3):
    return {"epoch": epoch, "margin": margin, "cos_anchor": cos_anchor, "cos_next": cos_next, "cos_prev": cos_prev}


def test_drift_gate_at_any_epoch():
    assert gate(res(1, cos_anchor=0.04), G, warmup_epochs=2) == "drift"
    assert gate(res(1, cos_anchor=math.nan), G, warmup_epochs=2) == "drift"


def test_margin_gate_only_after_warmup_and_grace():
    assert gate(res(3, margin=0.0), G, warmup_epochs=2) is None  # epoch 3 = warm-up 2 + grace 1
    assert gate(res(4, margin=0.0), G, warmup_epochs=2) == "margin"
    assert gate(res(4, margin=math.nan), G, warmup_epochs=2) == "margin"
    assert gate(res(4, margin=0.10), G, warmup_epochs=2) is None


def test_escape_gate_stops_a_prediction_far_from_both_neighbours_at_any_epoch():
    assert gate(res(1, cos_next=0.04, cos_prev=0.04, margin=0.0), E, warmup_epochs=2) == "escape"
    assert gate(res(1, cos_next=math.nan, cos_prev=0.04), E, warmup_epochs=2) == "escape"  # NaN counts as below
    assert gate(res(1, cos_next=0.04, cos_prev=0.5, margin=-0.46), E, warmup_epochs=2) is None  # near prev: not it
    assert gate(res(1, cos_next=0.5, cos_prev=0.04), E, warmup_epochs=2) is None
    assert gate(res(1, cos_next=0.04, cos_prev=0.04), G, warmup_epochs=2) is None  # off by default


def test_gates_are_checked_drift_then_escape_then_margin():
    both = res(9, cos_anchor=0.0, cos_next=0.0, cos_prev=0.0, margin=0.0)
    assert gate(both, E, warmup_epochs=2) == "drift"
    assert gate({**both, "cos_anchor": 0.5}, E, warmup_epochs=2) == "escape"
    assert gate({**both, "cos_anchor": 0.5, "cos_next": 0.2}, E, warmup_epochs=2) == "margin"


def test_gate_imports_without_ray():
    code = "import sys, tune_p7.core.gates, tune_p7.probe; assert 'ray' not in sys.modules, 'ray imported'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
