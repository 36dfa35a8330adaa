"""Cross-fitting folds: every train and held-out article in exactly one fold, each fold's run trained without it,
and the windows every context length of a comparison can score."""
import numpy as np
import pytest

from tune_p7.data import folds
from tune_p7.data.loading import Split, load
from tune_p7.errors import InputError


def article_rows(split: Split) -> list[bytes]:
    """Each article's chunk bytes: an article's identity whatever its index."""
    return [split.chunks[a:b].tobytes() for a, b in zip(split.offsets[:-1], split.offsets[1:])]


def test_every_train_and_held_out_article_is_in_one_fold_and_each_run_trains_without_its_fold(small_store):
    data = load(small_store)
    pool = folds.pool(data)
    assert article_rows(pool) == article_rows(data.train) + article_rows(data.ood)  # never val
    seen = []
    for f in range(3):
        part, ids = folds.fold_data(data, f, 3, seed=0)
        held, trained = article_rows(part.ood), article_rows(part.train)
        assert part.ood.name == folds.HELDOUT and part.val is data.val
        assert held == [article_rows(pool)[i] for i in ids]  # pool indices, in the fold split's order
        assert not set(held) & set(trained) and len(held) + len(trained) == len(pool.offsets) - 1
        seen += list(ids)
    assert sorted(seen) == list(range(len(pool.offsets) - 1))


def test_folds_are_seeded_and_balanced_by_chunks():
    lengths = np.array([40, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 30, 5, 5])
    split = Split("pool", "x", np.zeros((lengths.sum(), 2), np.float32), np.r_[0, np.cumsum(lengths)])
    a, b = folds.assign(split, 2, seed=1), folds.assign(split, 2, seed=1)
    assert np.array_equal(a, b) and not np.array_equal(a, folds.assign(split, 2, seed=2))
    sizes = np.bincount(a, weights=lengths)
    assert abs(sizes[0] - sizes[1]) <= 3
    with pytest.raises(InputError, match="cannot make 20 cross-fitting folds"):
        folds.assign(split, 20, seed=0)


def test_the_common_windows_are_those_every_context_length_can_score(small_store):
    split = load(small_store).val
    mask = folds.window_mask(split, 3, 5)
    targets = split.windows(3)[mask][:, -1]
    assert np.array_equal(targets, split.windows(5)[:, -1])  # the same targets as at K = 5, in order
    assert folds.window_mask(split, 5, 5).all() and folds.window_mask(split, 5, 3).all()


def test_seed_format_windows_are_pooled_and_cut_with_their_windows(tmp_path):
    rng = np.random.default_rng(0)
    for name, n in (("train", 30), ("val", 9), ("ood", 12)):  # 3 articles of n / 3 windows each
        ctx, tgt = [], []
        for _ in range(3):
            seq = rng.standard_normal((n // 3 + 5, 8)).astype(np.float32)
            ctx += [seq[i:i + 5] for i in range(n // 3)]
            tgt += [seq[i + 5] for i in range(n // 3)]
        np.savez(tmp_path / f"{name}.npz", contexts=np.stack(ctx), targets=np.stack(tgt),
                 article_ids=np.repeat(np.arange(3), n // 3))
    data = load(tmp_path / "train.npz")
    pool = folds.pool(data)
    assert len(pool.windows(5)) == 42 and folds.window_mask(pool, 3, 5).all()
    part, ids = folds.fold_data(data, 0, 2, seed=0)
    total = len(part.ood.windows(5)) + len(part.train.windows(5))
    assert total <= 42 and len(part.ood.windows(5)) > 0
    for s in (part.ood, part.train):  # every window's chunks inside the split, within one article
        w = s.windows(5)
        art = np.searchsorted(s.offsets, w, side="right") - 1
        assert (w < len(s.chunks)).all() and (art == art[:, :1]).all()
