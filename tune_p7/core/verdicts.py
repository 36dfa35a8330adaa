"""The seed's verdicts and the deployment check: its thresholds and pure functions of metric values (numbers,
no tensors, so that validating a space or a summary needs no torch); and RANKABLE, the metrics a space may rank
by."""
from __future__ import annotations

import math
from typing import Mapping

# FACTS.md thresholds
PASS = {"margin": 0.20, "cos_next": 0.45, "cos_anchor": 0.40}
MARGINAL = {"margin": 0.10, "cos_next": 0.35, "cos_anchor": 0.30}
DRIFT = 0.05
DEPLOY_R5, DEPLOY_MRR = 0.10, 0.05
# What a space's ``metric`` may name: keys every trial reports every epoch (ASHA, the searchers and checkpoint
# retention rank by it, and a key that is never reported crashes Tune's controller mid-search)
RANKABLE = ("margin", "cos_next", "cos_prev", "cos_anchor", "cos_raw_anchor", "r_at_1", "r_at_5", "r_at_10",
            "mrr_at_10", "r_at_1_xctx", "r_at_5_xctx", "r_at_10_xctx", "mrr_at_10_xctx", "r_at_5_vs_direct",
            "mrr_at_10_vs_direct", "contrastive_accuracy", "copy_rate", "train_margin", "train_cos_next", "best_margin",
            "loss")


def _ge(x, threshold) -> bool:
    return x is not None and x >= threshold  # NaN compares False: a NaN metric never passes


def verdict(m: Mapping[str, float]) -> str:
    """PASS: margin >= 0.20, cos_next >= 0.45, cos_anchor >= 0.40. FAIL: margin < 0.10 or cos_next < 0.35 or
    cos_anchor < 0.30 (which includes drift, cos_anchor < 0.05) or any of them NaN. MARGINAL otherwise."""
    if all(_ge(m.get(k), t) for k, t in PASS.items()):
        return "PASS"
    if all(_ge(m.get(k), t) for k, t in MARGINAL.items()):
        return "MARGINAL"
    return "FAIL"


def fail_reasons(m: Mapping[str, float]) -> list[str]:
    """The FAIL thresholds ``m`` misses, each as "key value < threshold"; empty exactly when verdict(m) != FAIL."""
    return [f"{k} {m.get(k, math.nan):+.2f} < {t:.2f}" for k, t in MARGINAL.items() if not _ge(m.get(k), t)]


def deploy_ok(m: Mapping[str, float]) -> bool:
    """R@5 >= DIRECT's R@5 + 0.10 and MRR@10 >= DIRECT's MRR@10 + 0.05, on the same bank."""
    return (_ge(m.get("r_at_5"), m.get("direct_r_at_5", math.nan) + DEPLOY_R5)
            and _ge(m.get("mrr_at_10"), m.get("direct_mrr_at_10", math.nan) + DEPLOY_MRR))
