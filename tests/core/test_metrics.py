"""Metrics: cosines and retrieval ranks against a bank."""
import math

import pytest
import torch
import torch.nn.functional as F

from tune_p7.core.metrics import (contrastive_accuracy, copy_rate, cosines, infonce_chance, retrieval, retrieval_ranks,
                                  retrieval_ranks_xctx)


def test_cosines_by_hand():
    ctx = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    nxt = torch.tensor([[0.6, 0.8]])
    pred = torch.tensor([[0.0, 1.0]])
    m = cosines(pred, pred, ctx, nxt)
    assert m["cos_next"].item() == pytest.approx(0.8)
    assert m["cos_prev"].item() == pytest.approx(0.0)  # prev is ctx[-1]
    assert m["margin"].item() == pytest.approx(0.8)
    assert m["cos_anchor"].item() == pytest.approx(1 / math.sqrt(2))


def test_ranks_and_retrieval():
    bank = torch.eye(4)
    queries = F.normalize(torch.tensor([[1.0, 0.5, 0, 0], [1.0, 0.5, 0, 0], [0, 0, 0, 1.0]]), dim=-1)
    ranks = retrieval_ranks(queries, bank, torch.tensor([0, 1, 2]), block=2)
    assert ranks.tolist() == [0, 1, 1]  # query 3's target scores 0, tied with two others: only 1 strictly above
    r = retrieval(ranks, "x_")
    assert r["x_r_at_1"] == pytest.approx(1 / 3) and r["x_r_at_5"] == 1.0
    assert r["x_mrr_at_10"] == pytest.approx((1 + 0.5 + 0.5) / 3)


def test_ranks_without_the_context_by_hand():
    """Each distinct context chunk that scores above the target is taken out of the rank; the target never is."""
    bank = torch.eye(5)
    queries = torch.tensor([[3.0, 2, 1, 0.5, 0],  # target 2: rows 0, 1 above; of its context {3, 0, 4} only 0
                            [0.0, 5, 1, 0, 4],  # target 2: rows 1, 4 above; context {1, 2}: 1 (twice, once out)
                            [1.0, 1, 0, 0, 0],  # target 0 tied with context row 1: tied rows are never above
                            [float("nan")] * 5])  # never found
    targets = torch.tensor([2, 2, 0, 1])
    context = torch.tensor([[3, 0, 4], [1, 2, 1], [1, 2, 3], [0, 2, 3]])
    ranks, xctx = retrieval_ranks_xctx(queries, bank, targets, context, block=3)
    assert ranks.tolist() == [2, 2, 0, 5]
    assert xctx.tolist() == [1, 1, 0, 5]
    assert torch.equal(retrieval_ranks(queries, bank, targets, block=3), ranks)
    r = retrieval(xctx, "direct_", "_xctx")
    assert r["direct_r_at_1_xctx"] == pytest.approx(1 / 4)
    assert r["direct_mrr_at_10_xctx"] == pytest.approx((1 / 2 + 1 / 2 + 1 + 1 / 6) / 4)


def test_nan_queries_are_never_found():
    ranks = retrieval_ranks(torch.full((2, 4), float("nan")), torch.eye(4), torch.tensor([0, 1]))
    assert ranks.tolist() == [4, 4]
    assert retrieval(ranks)["r_at_1"] == 0.0


def test_contrastive_accuracy_is_the_share_of_distractors_farther_than_the_target():
    """A bank of 5 rows, so 4 distractors each: the target nearest (1), two rows above it (2/4), the farthest (0), a
    target tied with every row (ties are never closer: 1), a NaN prediction (never found: 0)."""
    bank = torch.eye(5)
    queries = torch.tensor([[0.0, 0, 1, 0, 0],  # target 2: nothing above
                            [3.0, 2, 1, 0, 0],  # target 2: rows 0, 1 above, rows 3, 4 farther
                            [0.0, 1, 1, 1, 1],  # target 0 scores 0: all four above
                            [1.0, 1, 1, 1, 1],  # target 3 tied with every row
                            [float("nan")] * 5])
    ranks = retrieval_ranks(queries, bank, torch.tensor([2, 2, 0, 3, 1]))
    assert contrastive_accuracy(ranks, len(bank)).tolist() == [1.0, 0.5, 0.0, 1.0, 0.0]


def test_contrastive_accuracy_of_a_prediction_blind_to_the_target_is_one_half():
    g = torch.Generator().manual_seed(0)
    bank = F.normalize(torch.randn(501, 16, generator=g), dim=-1)
    queries = F.normalize(torch.randn(2000, 16, generator=g), dim=-1)
    acc = contrastive_accuracy(retrieval_ranks(queries, bank, torch.randint(501, (2000,), generator=g)), len(bank))
    assert acc.dtype == torch.float64 and acc.shape == (2000,)
    assert float(acc.mean()) == pytest.approx(0.5, abs=0.01)


def test_copy_rate_counts_predictions_nearer_the_last_context_chunk_than_the_target():
    prev = torch.tensor([[1.0, 0.0]] * 4)
    nxt = torch.tensor([[0.0, 1.0]] * 4)
    pred = F.normalize(torch.tensor([[1.0, 0.0],  # ctx[-1] itself: a copy
                                     [0.9, 0.1],  # nearer prev
                                     [0.1, 0.9],  # nearer next
                                     [1.0, 1.0]]), dim=-1)  # halfway: a tie is no copy
    rate = copy_rate(pred, prev, nxt)
    assert rate.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert float(rate.mean()) == 0.5


def test_infonce_chance():
    assert infonce_chance(100) == pytest.approx(math.log(100))
