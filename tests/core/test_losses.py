"""Losses: each against a hand-computed case; the id mask; the per-sequence gate."""
import math

import pytest
import torch
import torch.nn.functional as F

from tune_p7.core.losses import gate_weights, info_nce, p7_loss, prev_repel, teacher_pull
from tune_p7.core.metrics import infonce_chance


def unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_info_nce_matches_hand_computation():
    pred = unit([1.0, 0.0])
    bank = unit([1.0, 0.0], [0.0, 1.0])  # positive, one negative
    loss = info_nce(pred, bank, torch.tensor([0, 1]), torch.tensor([0]), temperature=0.5)
    expected = -math.log(math.exp(1 / 0.5) / (math.exp(1 / 0.5) + math.exp(0)))
    assert torch.allclose(loss, torch.tensor([expected]), atol=1e-6)


def test_a_duplicate_in_the_bank_does_not_change_the_loss():
    torch.manual_seed(0)
    bank = F.normalize(torch.randn(7, 8), dim=-1)
    pred = F.normalize(bank[:3] + 0.3 * torch.randn(3, 8), dim=-1)  # each near its positive
    ids = torch.arange(7)
    base = info_nce(pred, bank, ids, ids[:3], 0.07)
    # put a copy of sequence 1's positive into the bank as a "negative" with the same chunk id
    bank2 = torch.cat([bank, bank[1:2]])
    ids2 = torch.cat([ids, ids[1:2]])
    assert torch.allclose(info_nce(pred, bank2, ids2, ids[:3], 0.07), base, atol=1e-6)
    # under another id it would count as a negative and raise that sequence's loss
    ids3 = torch.cat([ids, torch.tensor([99])])
    assert info_nce(pred, bank2, ids3, ids[:3], 0.07)[1] > base[1] + 1e-3


def test_empty_slots_are_masked():
    pred = unit([1.0, 0.0])
    bank = unit([1.0, 0.0], [1.0, 0.1])
    assert torch.allclose(info_nce(pred, bank, torch.tensor([0, -1]), torch.tensor([0]), 0.1), torch.zeros(1))


def test_prev_repel_hinge():
    pred = unit([1.0, 0.0], [1.0, 0.0])
    nxt = unit([1.0, 0.0], [0.6, 0.8])
    prev = unit([0.0, 1.0], [1.0, 0.0])
    # seq 0: cos_n - cos_p = 1 > margin -> 0;  seq 1: 0.6 - 1 = -0.4 -> 0.07 + 0.4
    assert torch.allclose(prev_repel(pred, nxt, prev, 0.07), torch.tensor([0.0, 0.47]), atol=1e-6)


def test_gate_is_per_sequence_and_compares_with_ctx_minus_2():
    last = unit([1.0, 0.0], [1.0, 0.0])
    before = unit([0.0, 1.0], [1.0, 0.0])  # seq 1: ctx[-2] == ctx[-1]
    nxt = unit([0.8, 0.6], [0.8, 0.6])
    # Delta = 0.8 - 0 = 0.8 (strong) and 0.8 - 1 = -0.2 (weak)
    assert torch.equal(gate_weights(last, before, nxt, 0.03, 0.25), torch.tensor([1.0, 0.25]))


def test_teacher_pull_only_below_floor():
    pred = unit([1.0, 0.0], [1.0, 0.0])
    nxt = unit([0.0, 1.0], [1.0, 0.1])
    out = teacher_pull(pred, nxt, 0.2)
    assert math.isclose(out[0].item(), 1.0, abs_tol=1e-6) and out[1].item() == 0.0


def test_combined_loss_weights_each_sequence_by_its_gate():
    torch.manual_seed(1)
    pred, nxt, prev, before = (F.normalize(torch.randn(4, 6), dim=-1) for _ in range(4))
    bank = torch.cat([nxt, prev])
    ids = torch.arange(8)
    kw = dict(temperature=0.1, margin=0.07, w_rank=1.0, w_margin=0.5, w_teacher=0.2, teacher_floor=0.2,
              gate_threshold=0.03, gate_weak_weight=0.25)
    total, parts = p7_loss(pred, nxt, prev, before, bank, ids, ids[:4], **kw)
    g = gate_weights(prev, before, nxt, 0.03, 0.25)
    per = info_nce(pred, bank, ids, ids[:4], 0.1) + 0.5 * prev_repel(pred, nxt, prev, 0.07) \
        + 0.2 * teacher_pull(pred, nxt, 0.2)
    assert torch.allclose(total, (g * per).mean(), atol=1e-6)
    assert set(parts) == {"loss", "loss_rank", "loss_rank_weighted", "loss_margin", "loss_teacher", "gate_mean"}
    assert torch.allclose(parts["loss_rank_weighted"], (g * info_nce(pred, bank, ids, ids[:4], 0.1)).mean())


def test_loss_rank_is_the_plain_infonce_mean_and_sits_at_chance_for_a_blind_model():
    """With every gate weight weak (Delta < threshold for all), loss_rank is still the plain mean of the InfoNCE
    term, so a predictor that cannot tell the C candidates apart scores ln(C) = infonce_chance(C)."""
    torch.manual_seed(2)
    b, c = 4, 12
    bank = F.normalize(torch.randn(c, 6), dim=-1)
    bank[:, 0] = 0  # every candidate orthogonal to the prediction: all logits equal
    bank = F.normalize(bank, dim=-1)
    pred = torch.zeros(b, 6)
    pred[:, 0] = 1
    nxt, prev, before = bank[:b], bank[b:2 * b], bank[2 * b:3 * b]
    ids = torch.arange(c)
    kw = dict(temperature=0.07, margin=0.07, w_rank=1.0, w_margin=0.5, w_teacher=0.0, teacher_floor=0.2,
              gate_threshold=2.0, gate_weak_weight=0.25)  # threshold 2 > any Delta: every weight is 0.25
    _, parts = p7_loss(pred, nxt, prev, before, bank, ids, ids[:b], **kw)
    nce = info_nce(pred, bank, ids, ids[:b], 0.07)
    assert parts["gate_mean"].item() == pytest.approx(0.25)
    assert parts["loss_rank"].item() == pytest.approx(nce.mean().item())
    assert parts["loss_rank"].item() == pytest.approx(infonce_chance(c), rel=1e-5)
    assert parts["loss_rank_weighted"].item() == pytest.approx(0.25 * infonce_chance(c), rel=1e-5)
