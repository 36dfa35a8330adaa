"""Verdicts and the deployment check: the seed's thresholds applied to metric values."""
from tune_p7.core.verdicts import deploy_ok, fail_reasons, verdict


def test_verdicts_follow_facts_thresholds():
    assert verdict({"margin": 0.25, "cos_next": 0.5, "cos_anchor": 0.45}) == "PASS"
    assert verdict({"margin": 0.15, "cos_next": 0.5, "cos_anchor": 0.45}) == "MARGINAL"
    assert verdict({"margin": 0.25, "cos_next": 0.40, "cos_anchor": 0.45}) == "MARGINAL"
    assert verdict({"margin": 0.09, "cos_next": 0.9, "cos_anchor": 0.9}) == "FAIL"
    assert verdict({"margin": 0.3, "cos_next": 0.9, "cos_anchor": 0.04}) == "FAIL"  # drift
    assert verdict({"margin": float("nan"), "cos_next": 0.9, "cos_anchor": 0.9}) == "FAIL"


def test_fail_reasons_name_the_missed_thresholds():
    assert fail_reasons({"margin": 0.25, "cos_next": 0.5, "cos_anchor": 0.45}) == []
    assert fail_reasons({"margin": 0.15, "cos_next": 0.5, "cos_anchor": 0.35}) == []  # MARGINAL is no FAIL
    assert fail_reasons({"margin": 0.9, "cos_next": 1.0, "cos_anchor": -0.66}) == ["cos_anchor -0.66 < 0.30"]
    assert fail_reasons({"margin": float("nan"), "cos_next": 0.2, "cos_anchor": 0.9}) == \
        ["margin +nan < 0.10", "cos_next +0.20 < 0.35"]


def test_deployment_check_against_direct():
    base = {"direct_r_at_5": 0.30, "direct_mrr_at_10": 0.20}
    assert deploy_ok({**base, "r_at_5": 0.41, "mrr_at_10": 0.26})
    assert not deploy_ok({**base, "r_at_5": 0.39, "mrr_at_10": 0.30})
    assert not deploy_ok({**base, "r_at_5": 0.50, "mrr_at_10": 0.24})
