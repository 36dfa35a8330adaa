"""The training loop: learns where a direction exists, not where none does; repeatable; resumable."""
import copy
import math

import pytest

from conftest import small_config
from tune_p7.core.loop import Evaluator, NonFiniteLoss, fit
from tune_p7.core.model import build_model
from tune_p7.core.verdicts import PASS
from tune_p7.data.loading import load


def test_learns_a_planted_direction(strong_store):
    h = fit(small_config(epochs=4), load(strong_store))
    last = h[-1]
    assert last["margin"] > 0.1
    assert last["r_at_5"] > last["direct_r_at_5"] + 0.1
    assert last["train_margin"] > 0  # the real cosine margin on training data, not the hinge
    assert {"cos_next", "cos_prev", "cos_anchor", "mrr_at_10", "direct_mrr_at_10", "centroid_r_at_5",
            "anchor_lambda", "loss_rank", "loss_rank_weighted", "r_at_5_xctx", "mrr_at_10_xctx",
            "direct_r_at_1_xctx", "centroid_r_at_10_xctx"} <= set(last)


def test_direct_is_never_first_in_the_whole_bank_but_is_once_its_context_is_left_out(flat_store):
    """ctx[-1] is in the bank and is DIRECT's own query (cos 1): in the whole bank it outranks every target."""
    split = load(flat_store).val
    ev = Evaluator(split, small_config())
    b = ev.baselines
    assert b["direct_r_at_1"] == 0.0
    assert b["direct_r_at_1_xctx"] > 0.1 and b["direct_mrr_at_10_xctx"] > b["direct_mrr_at_10"]
    assert b["centroid_r_at_5_xctx"] >= b["centroid_r_at_5"]
    res = ev(build_model(small_config(), split.dim), bf16=False)
    for k in ("r_at_1", "r_at_5", "r_at_10", "mrr_at_10"):
        assert res[k + "_xctx"] >= res[k]  # leaving chunks out of the bank can only lift the target


def test_no_direction_stays_below_pass(flat_store):
    h = fit(small_config(epochs=3), load(flat_store))
    assert all(m["margin"] < PASS["margin"] for m in h)


def test_same_seed_same_metrics(small_store):
    data = load(small_store)
    a = fit(small_config(epochs=2), data)
    b = fit(small_config(epochs=2), data)
    drop = ("train_seconds", "eval_seconds", "sequences_per_second")
    assert [{k: v for k, v in m.items() if k not in drop} for m in a] == \
        [{k: v for k, v in m.items() if k not in drop} for m in b]


def test_resume_from_a_state_does_what_the_uninterrupted_run_does(small_store):
    data = load(small_store)
    cfg = small_config(epochs=3)
    states = {}
    full = fit(cfg, data, report=lambda m, s: states.setdefault(m["epoch"], copy.deepcopy(s)))
    resumed = fit(cfg, data, state=states[1])
    assert [m["epoch"] for m in resumed] == [2, 3]
    assert resumed[-1]["margin"] == full[-1]["margin"] and resumed[-1]["loss"] == full[-1]["loss"]


def test_a_resumed_run_trains_with_its_config_lr_not_the_checkpoints(small_store):
    """A PBT exploit hands a trial another trial's checkpoint with a new lr: the optimizer state loads, its lr and
    weight decay come from the config."""
    data = load(small_store)
    first, after = {}, {}
    fit(small_config(epochs=1), data, report=lambda m, s: first.update(copy.deepcopy(s)))
    fit(small_config(epochs=2, lr=1e-9, weight_decay=0.5), data, report=lambda m, s: after.update(copy.deepcopy(s)),
        state=first)
    groups = after["optimizer"]["param_groups"]
    assert all(g["lr"] == 1e-9 and g["weight_decay"] == 0.5 for g in groups)
    moved = max(float((after["model"][k].float() - v.float()).abs().max()) for k, v in first["model"].items())
    assert moved < 1e-6  # at lr 2e-3 (the checkpoint's) one epoch moves weights by ~1e-3


def test_lstm_trains(small_store):
    h = fit(small_config(arch="lstm", epochs=1), load(small_store))
    assert math.isfinite(h[0]["margin"])


def test_nan_loss_reports_the_epoch_then_raises(small_store):
    seen = []
    with pytest.raises(NonFiniteLoss, match="epoch 1"):
        fit(small_config(lr=1e12, grad_clip=1e12, epochs=2), load(small_store), report=lambda m, s: seen.append((m, s)))
    assert len(seen) == 1 and seen[0][1] is None and "error" in seen[0][0]


def test_bf16_and_fp32_end_with_the_same_val_metrics(strong_store):
    """precision=bf16 (autocast, fp32 master weights, losses and metrics in fp32) ends within 0.01 of fp32."""
    data = load(strong_store)
    tiny = dict(epochs=3, d_model=32, n_heads=2, d_ff=64, n_layers=1)
    fp32 = fit(small_config(precision="fp32", **tiny), data)[-1]
    bf16 = fit(small_config(precision="bf16", **tiny), data)[-1]
    assert bf16["bf16"] and not fp32["bf16"]
    assert fp32["margin"] > 0.1  # it learned something: the comparison is not between two untrained models
    for k in ("cos_next", "cos_prev", "margin", "cos_anchor"):
        assert abs(bf16[k] - fp32[k]) < 0.01, (k, bf16[k], fp32[k])


def test_every_metric_a_space_may_rank_by_is_reported_every_epoch(small_store):
    from tune_p7.core.verdicts import RANKABLE

    for m in fit(small_config(epochs=2), load(small_store)):
        assert set(RANKABLE) <= set(m), set(RANKABLE) - set(m)


def test_the_evaluator_reports_contrastive_accuracy_and_copy_rate_beside_direct_with_their_intervals(small_store):
    cfg = small_config()
    ev = Evaluator(load(small_store).val, cfg)
    model = build_model(cfg, ev.st.chunks.shape[1])
    m, w = ev(model, False), ev.per_window(model, False)
    bank = len(ev.bank)
    assert m["contrastive_accuracy"] == pytest.approx(float((1 - w["rank"].double() / (bank - 1)).mean()))
    assert m["copy_rate"] == pytest.approx(float((w["margin"] < 0).double().mean()))
    for k in ("contrastive_accuracy", "copy_rate", "direct_contrastive_accuracy", "centroid_contrastive_accuracy",
              "centroid_copy_rate", "r_at_5_xctx_vs_direct", "mrr_at_10_xctx_vs_direct"):
        assert m[k + "_lo"] <= m[k] <= m[k + "_hi"], k
    assert m["r_at_5_xctx_vs_direct"] == pytest.approx(m["r_at_5_xctx"] - m["direct_r_at_5_xctx"])
    assert 0.5 < m["direct_contrastive_accuracy"] <= 1  # ctx[-1] lies nearer the next chunk than most of the bank
    sums = ev.article_sums(model, False)
    assert float(sums["copy_rate"].sum()) == pytest.approx(m["copy_rate"] * len(ev.st))
    direct = float(sums["direct_contrastive_accuracy"].sum()) / len(ev.st)
    assert direct == pytest.approx(m["direct_contrastive_accuracy"])
