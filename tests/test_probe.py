"""The data probe: the same figures from an article store and from seed NPZ files of the same data; the oracle
judged by the search's gates and verdict, with a warning where they would stop or fail it."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tune_p7.core.gates import Gates
from tune_p7.data.convert import store_to_npz
from tune_p7.data.loading import load
from tune_p7.data.store import write_store
from tune_p7.data.synth import generate
from tune_p7.probe import main, markdown, near_duplicate_share, probe

K = 3


def write_splits(folder, art, idx, vec, k=K):
    """train/val/ood article stores (articles split 60/20/20 %) and the seed NPZ files of the same windows."""
    (folder / "store").mkdir()
    (folder / "npz").mkdir()
    ids = np.unique(art)
    cut = {"train": ids[:len(ids) * 3 // 5], "val": ids[len(ids) * 3 // 5:len(ids) * 4 // 5],
           "ood": ids[len(ids) * 4 // 5:]}
    for name, keep in cut.items():
        rows = np.isin(art, keep)
        store = folder / "store" / f"{name}.parquet"
        write_store(store, art[rows], idx[rows], vec[rows], dtype="float32")
        store_to_npz(store, folder / "npz" / f"{name}.npz", k)
    return folder / "store", folder / "npz"


def flat(d, prefix=""):
    out = {}
    for key, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{key}."))
        else:
            out[prefix + key] = v
    return out


def test_store_and_npz_of_the_same_data_give_the_same_probe(tmp_path):
    art, idx, vec = generate(50, 12, 16, 0.5, seed=3)
    store, npz = write_splits(tmp_path, art, idx, vec)
    a, b = probe(load(store), K), probe(load(npz), K)
    va = a["splits"]["val"]
    # by hand, in document order: windows (x[t-2], x[t-1], x[t]) for t >= K inside each val article
    x = vec[np.isin(art, np.unique(art)[30:40])].reshape(10, 12, 16)
    fwd = (x[:, K - 1:-1] * x[:, K:]).sum(-1)
    back = (x[:, K - 1:-1] * x[:, K - 2:-2]).sum(-1)
    assert va["adjacent_cos"] == pytest.approx(fwd.mean(), abs=1e-5)
    assert va["delta"] == pytest.approx((fwd - back).mean(), abs=1e-5)
    for split in ("val", "ood"):
        fa, fb = flat(a["splits"][split]), flat(b["splits"][split])
        assert fa.keys() == fb.keys()
        for key in fa:
            assert fb[key] == (pytest.approx(fa[key], abs=1e-5) if isinstance(fa[key], float) else fa[key]), key
    assert a["warnings"] == b["warnings"] == []


def test_random_pairs_are_chunks_of_different_articles():
    art, idx, vec = generate(20, 6, 8, 0.5, seed=1)
    from tune_p7.data.loading import _split_from_store
    from tune_p7.probe import pair_cosines

    split = _split_from_store("mem", "val", art, vec)
    cos = vec @ vec.T
    other = art[:, None] != art[None, :]
    assert pair_cosines(split, K)["random_cos"] == pytest.approx(cos[other].mean(), abs=1e-6)


def test_probe_json_has_every_key_the_summary_and_evaluate_read(tmp_path, small_store):
    out = tmp_path / "probe.json"
    assert main([str(small_store), "--context-length", "4", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["warnings"] == [] and result["context_length"] == 4
    val = result["splits"]["val"]
    assert val["bank"] == len(load(small_store).val.chunks)
    retrieval = {f"{m}{x}" for m in ("r_at_1", "r_at_5", "r_at_10", "mrr_at_10") for x in ("", "_xctx")}
    for name in ("direct", "centroid", "ridge", "knn"):
        assert retrieval | {"contrastive_accuracy"} <= set(val["baselines"][name]), name
    for name in ("ridge", "knn"):
        assert {"gate", "verdict", "copy_rate", "r_at_5_vs_direct_lo", "mrr_at_10_xctx_vs_direct_lo"} <= set(
            val["baselines"][name]), name
    assert val["baselines"]["ridge"]["alpha_scale"] == result["chosen"]["ridge"]["alpha_scale"]
    assert 0.0 <= val["near_duplicates"] <= 1.0 and isinstance(result["closing"], str)
    assert set(val["oracle"]) == {"cos_next", "cos_prev", "margin", "cos_anchor", "gate", "verdict"}
    assert val["oracle"]["cos_next"] == pytest.approx(1.0, abs=1e-5)
    assert val["oracle"]["margin"] == pytest.approx(1 - val["adjacent_cos"], abs=1e-5)
    assert val["baselines"]["direct"]["r_at_1"] == 0.0  # ctx[-1] is in the bank: only _xctx can find the target


def test_an_oracle_far_from_its_context_centroid_warns_of_the_drift_gate(tmp_path):
    """Articles on great circles with a big step (rho 10, one radian a chunk): the next chunk lies opposite its
    context's centroid, so the drift gate and the verdict's cos_anchor would stop and fail the true answer."""
    art, idx, vec = generate(50, 12, 16, 1.0, seed=0, rho=10.0, sigma=0.1, tau=0.05)
    store, _ = write_splits(tmp_path, art, idx, vec)
    gates = Gates(drift=0.05, margin=0.10, grace_epochs=1)
    result = probe(load(store), 5, gates=gates, warmup_epochs=2)
    orc = result["splits"]["val"]["oracle"]
    assert orc["cos_anchor"] < 0.05 and orc["gate"] == "drift" and orc["verdict"] == "FAIL"
    assert result["gate_epoch"] == 4  # past warm-up 2 + grace 1: the margin gate applies too
    drift = [w for w in result["warnings"] if "drift gate" in w]
    assert len(drift) == 1  # val only: the gates watch val
    line = drift[0]
    assert line.startswith("warning: on val ") and f"oracle cos_anchor {orc['cos_anchor']:+.2f} < 0.05" in line
    assert "escape:" in line and "\n" not in line
    fails = [w for w in result["warnings"] if "verdict FAIL" in w]
    assert [w.split()[2] for w in fails] == ["val", "ood"] and "cos_anchor" in fails[0] and "< 0.30" in fails[0]
    assert all(w.startswith("warning: ") for w in result["warnings"]) and len(result["warnings"]) == 3


def test_the_margin_gate_is_judged_past_warm_up_and_grace(tmp_path):
    """Near-identical neighbours: the oracle's margin 1 - cos(next, ctx[-1]) is below the margin gate."""
    art, idx, vec = generate(50, 12, 16, 0.02, seed=0, rho=0.1, sigma=0.02, tau=0.01)
    store, _ = write_splits(tmp_path, art, idx, vec)
    result = probe(load(store), K, gates=Gates(drift=-1.0, margin=0.10, grace_epochs=0), warmup_epochs=1)
    orc = result["splits"]["val"]["oracle"]
    assert orc["margin"] < 0.10 and orc["gate"] == "margin" and math.isfinite(orc["cos_anchor"])
    assert any("margin gate" in w and f"oracle margin {orc['margin']:+.2f} < 0.1" in w for w in result["warnings"])


def probe_of(folder, k, **kw) -> dict:
    art, idx, vec = generate(**kw)
    write_store(folder / "s.parquet", art, idx, vec, dtype="float32")
    return probe(load(folder / "s.parquet", val_fraction=0.2, ood_fraction=0.2), k)


def test_where_topics_recur_the_probe_says_a_direction_is_learnable_and_reports_ood_with_the_val_choice(tmp_path):
    result = probe_of(tmp_path, 3, articles=100, chunks_per_article=12, dim=16, forward_signal=1.0, topics=4,
                      identity=0.7, seed=0)
    closing = result["closing"]
    assert "kNN-successor" in closing and "beat" in closing and "something is learnable here" in closing
    assert markdown(result).rstrip().endswith(closing) and closing.count(". ") == 0  # one sentence, last
    chosen = result["chosen"]["knn"]
    assert chosen["windows"] == result["splits"]["val"]["windows"]  # chosen on every val window...
    for split in ("val", "ood"):  # ...and the ood row is that same choice, not one made on ood
        row = result["splits"][split]["baselines"]["knn"]
        assert (row["neighbours"], row["temperature"]) == (chosen["neighbours"], chosen["temperature"])


def test_where_each_article_follows_its_own_direction_the_probe_does_not_say_nothing_is_learnable(tmp_path):
    """Every article on an orbit of its own, read two chunks at a time: neither ridge nor the kNN-successor beats
    DIRECT, and the sentence says only that, not that the data holds nothing to learn."""
    result = probe_of(tmp_path, 2, articles=100, chunks_per_article=12, dim=32, forward_signal=2.0, seed=0)
    closing = result["closing"]
    assert closing.startswith("On val (20 articles, 20.0 effective), neither ridge nor kNN-successor beats DIRECT "
                              "with confidence")
    assert "says only that these references do not" in closing and "a trained model can still learn" in closing
    assert not any(claim in closing for claim in ("nothing", "not learnable", "no direction", "cannot be learned"))


def test_with_too_few_val_articles_the_probe_claims_nothing_either_way(tmp_path):
    """4 val articles: below what the simulated intervals need for 95% (tune_p7.core.clustered.claims_confidence),
    so the sentence neither says a reference beats DIRECT nor that none does, even where topics recur."""
    result = probe_of(tmp_path, 3, articles=20, chunks_per_article=12, dim=16, forward_signal=1.0, topics=4,
                      identity=0.7, seed=0)
    val = result["splits"]["val"]
    assert val["articles"] == 4 and val["eff_articles"] == pytest.approx(4.0)
    closing = result["closing"]
    assert closing.startswith("On val (4 articles, 4.0 effective) no claim is made either way")
    assert "with confidence" not in closing and "learnable here" not in closing and closing.count(". ") == 0


def test_near_duplicates_are_chunks_within_the_threshold_of_a_train_chunk():
    train = torch.eye(3)[:1]
    chunks = F.normalize(torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 0.1, 0], [1.0, 0.3, 0]]), dim=-1)
    # cosines to the train chunk: 1, 0, 0.995, 0.958
    assert near_duplicate_share(chunks, train) == 0.5
    assert near_duplicate_share(chunks, train, threshold=0.95, block_cells=1) == 0.75  # a row a block
