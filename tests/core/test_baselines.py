"""The untrained references: ridge with its regularisation chosen on val, the kNN-successor with its neighbourhood
and weighting chosen on val, both scored by the Evaluator exactly like a trained model."""
import pytest
import torch
import torch.nn.functional as F

from tune_p7.core.baselines import KnnSuccessor, references, tuned_knn, tuned_ridge
from tune_p7.core.config import P7Config
from tune_p7.core.loop import Evaluator
from tune_p7.data.batches import SplitTensors
from tune_p7.data.loading import _split_from_store, load
from tune_p7.data.store import write_store
from tune_p7.data.synth import generate

K = 3
# articles drawn from 4 topics that travel the same orbit the same way, each with an identity of its own
TOPICS = dict(articles=100, chunks_per_article=12, dim=16, forward_signal=1.0, topics=4, identity=0.7, seed=0)
BEATS = ("r_at_5_vs_direct", "mrr_at_10_vs_direct", "r_at_5_xctx_vs_direct", "mrr_at_10_xctx_vs_direct")


def load_generated(folder, name, **kw):
    art, idx, vec = generate(**kw)
    path = folder / f"{name}.parquet"
    write_store(path, art, idx, vec, dtype="float32")
    return load(path, val_fraction=0.2, ood_fraction=0.2)


def scored(model, split, k=K) -> dict:
    return Evaluator(split, P7Config(context_length=k, precision="fp32"))(model, bf16=False)


@pytest.fixture(scope="module")
def ordered(tmp_path_factory):
    return load_generated(tmp_path_factory.mktemp("topics"), "ordered", **TOPICS)


@pytest.fixture(scope="module")
def ordered_refs(ordered):
    return references(ordered.train, ordered.val, K)


def test_knn_successor_beats_direct_where_articles_share_their_direction_and_not_once_their_order_is_gone(
        tmp_path, ordered, ordered_refs):
    shuffled = load_generated(tmp_path, "shuffled", **TOPICS, shuffled=True)
    r = scored(ordered_refs["knn"], ordered.val)
    assert all(r[k + "_lo"] > 0 for k in BEATS), {k: r[k + "_lo"] for k in BEATS}
    r = scored(tuned_knn(shuffled.train, shuffled.val, K), shuffled.val)
    assert not (r["r_at_5_vs_direct_lo"] > 0 and r["mrr_at_10_vs_direct_lo"] > 0)
    assert r["r_at_5_vs_direct"] < 0  # the same vectors in no order: copying the last chunk does better


def test_the_references_score_like_a_trained_model(ordered, ordered_refs):
    """references() gives modules the Evaluator scores and sums per article (what the confirmation reads)."""
    assert set(ordered_refs) == {"ridge", "knn"}
    ev = Evaluator(ordered.ood, P7Config(context_length=K, precision="fp32"))
    for name, model in ordered_refs.items():
        sums = ev.article_sums(model, False)
        assert int(sums["count"].sum()) == len(ev.st), name
        assert float(sums["r_at_5"].sum() / sums["count"].sum()) == pytest.approx(ev(model, False)["r_at_5"])
        assert model.choice["best"] == model.hyperparameters


def test_the_blocked_knn_search_finds_the_exact_nearest_contexts():
    g = torch.Generator().manual_seed(0)
    vec = F.normalize(torch.randn(120, 8, generator=g), dim=-1).numpy()
    train = _split_from_store("mem", "train", torch.arange(120).div(12, rounding_mode="floor").numpy(), vec)
    st = SplitTensors(train, K)
    context = F.normalize(torch.randn(7, K, 8, generator=g), dim=-1)
    keys = st.chunks[st.windows[:, :K]].reshape(len(st), -1)
    want = (context.reshape(7, -1) @ keys.T / K).topk(5, dim=1)
    for cells in (50, 10 ** 6):  # a few windows a block, and one block
        sims, nxt = KnnSuccessor(train, K, block_cells=cells).search(context, 5)
        assert torch.allclose(sims, want.values, atol=1e-6)
        assert torch.equal(nxt, st.chunks[st.windows[want.indices, -1]])


def test_the_neighbours_vote_with_their_next_chunks():
    """Two train windows (rows 0-3, 4-7); a query equal to the first's context: its nearest neighbour is that window,
    whose next chunk is row 3; uniform and softmax votes over both weigh the two next chunks as stated."""
    vec = torch.eye(8).numpy()
    train = _split_from_store("mem", "train", torch.tensor([0] * 4 + [1] * 4).numpy(), vec)
    context = torch.eye(8)[None, :K]
    assert torch.equal(KnnSuccessor(train, K, neighbours=1)(context).q, torch.eye(8)[None, 3])
    sims, nxt = KnnSuccessor(train, K).search(context, 2)
    assert sims.tolist() == [[1.0, 0.0]]
    assert torch.allclose(KnnSuccessor.vote(sims, nxt, 2, None), F.normalize(torch.eye(8)[3] + torch.eye(8)[7], dim=0))
    w = torch.softmax(torch.tensor([1.0, 0.0]) / 0.5, 0)
    assert torch.allclose(KnnSuccessor.vote(sims, nxt, 2, 0.5),
                          F.normalize(w[0] * torch.eye(8)[3] + w[1] * torch.eye(8)[7], dim=0))


def test_the_neighbourhood_is_chosen_on_val(ordered, ordered_refs):
    """The choice is the best of the grid by val R@5 (then MRR@10), scored on every val window: re-scoring the
    chosen module on val gives the figures the choice recorded."""
    knn = ordered_refs["knn"]
    scores = knn.choice["scores"]
    assert knn.choice["windows"] == len(SplitTensors(ordered.val, K))
    best = max(scores, key=lambda s: (s["r_at_5"], s["mrr_at_10"]))
    assert (knn.neighbours, knn.temperature) == (best["neighbours"], best["temperature"])
    assert len({(s["r_at_5"], s["mrr_at_10"]) for s in scores}) > 1  # the grid's candidates differ on val
    r = scored(knn, ordered.val)
    assert (r["r_at_5"], r["mrr_at_10"]) == pytest.approx((best["r_at_5"], best["mrr_at_10"]))


def test_ridge_takes_the_regularisation_the_data_asks_for(tmp_path):
    """Many windows of few dimensions: the least regularisation wins; fewer windows than weights: ridge needs a
    strong one. Each choice is the best of its val scores."""
    many = load_generated(tmp_path, "many", articles=150, chunks_per_article=12, dim=8, forward_signal=1.0)
    few = load_generated(tmp_path, "few", articles=30, chunks_per_article=12, dim=32, forward_signal=1.0)
    chosen = []
    for data, k in ((many, 3), (few, 5)):
        ridge = tuned_ridge(data.train, data.val, k)
        best = max(ridge.choice["scores"], key=lambda s: (s["r_at_5"], s["mrr_at_10"]))
        assert ridge.alpha_scale == best["alpha_scale"]
        chosen.append(ridge.alpha_scale)
    assert chosen[0] <= 1e-3 and chosen[1] >= 0.1, chosen
