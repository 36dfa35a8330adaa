"""Data: windows as index arrays inside articles, splits disjoint by article, NPZ and store behind one
interface, and one clear line for every kind of bad data."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import make_store
from tune_p7.data.loading import load
from tune_p7.data.store import read_store, write_store
from tune_p7.errors import InputError


def article_of(split, rows):
    return np.searchsorted(split.offsets, rows, side="right") - 1


@pytest.mark.parametrize("k", [3, 5, 7])
def test_windows_of_any_context_length_stay_inside_articles(small_store, k):
    data = load(small_store)
    for split in (data.train, data.val, data.ood):
        w = split.windows(k)
        assert w.shape[1] == k + 1
        arts = article_of(split, w)
        assert (arts == arts[:, :1]).all()  # never crosses an article
        assert (np.diff(w, axis=1) == 1).all()  # consecutive chunks in order
        lengths = np.diff(split.offsets)
        assert len(w) == np.maximum(lengths - k, 0).sum()  # every window, once


def test_splits_are_disjoint_by_article_and_seeded(small_store):
    store = read_store(small_store)
    a, b = load(small_store, split_seed=1), load(small_store, split_seed=1)
    sets = []
    for split in (a.train, a.val, a.ood):
        # recover article ids by matching vectors back to the store
        keys = {v.tobytes(): art for v, art in zip(np.round(store.vectors / np.linalg.norm(store.vectors, axis=1,
                                                                                            keepdims=True), 5),
                                                    store.article_id)}
        sets.append({keys[v.tobytes()] for v in np.round(split.chunks, 5)})
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sum(map(len, sets)) == len(np.unique(store.article_id))
    assert np.array_equal(a.val.chunks, b.val.chunks)
    assert not np.array_equal(load(small_store, split_seed=2).val.chunks, a.val.chunks)


def _npz(path, n=40, k=5, d=16, **extra):
    rng = np.random.default_rng(0)
    seq = rng.standard_normal((n + k + 1, d)).astype(np.float32)
    ctx = np.stack([seq[i:i + k] for i in range(n)])
    tgt = np.stack([seq[i + k] for i in range(n)])
    np.savez(path, **{"contexts": ctx, "targets": tgt, **extra})
    return path


def test_npz_pair_by_name_merges_overlapping_windows_into_chunks(tmp_path):
    _npz(tmp_path / "arxiv_train_sequences.npz")
    _npz(tmp_path / "arxiv_val_sequences.npz", n=20)
    data = load(tmp_path / "arxiv_train_sequences.npz")
    assert data.ood is None
    assert len(data.train.chunks) == 40 + 5  # one row per distinct chunk, not 6 per window
    assert data.train.windows(5).shape == (40, 6) and data.train.windows(3).shape == (40, 4)
    assert len(data.train.offsets) == 2  # the overlapping windows form one article
    with pytest.raises(InputError, match="context length 7 .* 5 chunks"):
        data.check_context(7)


def test_npz_folder_layout(tmp_path):
    for name in ("train", "val", "ood"):
        _npz(tmp_path / f"{name}.npz")
    data = load(tmp_path)
    assert data.ood is not None and data.dim == 16


def one_line(exc_info, *words):
    msg = str(exc_info.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg
    return msg


def bad_store(tmp_path, mutate, name="bad.parquet"):
    path = tmp_path / name
    make_store(path, articles=20, chunks=10, dim=8)
    table = pq.read_table(path)
    pq.write_table(mutate(table), path)
    return path


def vec_column(values, d):
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), d)


@pytest.mark.parametrize("case, mutate, words", [
    ("missing column", lambda t: t.drop(["chunk_index"]), ["missing column", "chunk_index"]),
    ("nan", lambda t: t.set_column(2, "vector", vec_column(np.where(np.arange(200 * 8).reshape(200, 8) == 17, np.nan,
                                   t.column("vector").combine_chunks().flatten().to_numpy().reshape(200, 8))
                                   .astype(np.float32), 8)), ["NaN or Inf", "row 2"]),
    ("inf", lambda t: t.set_column(2, "vector", vec_column(np.full((200, 8), np.inf, np.float32), 8)), ["NaN or Inf"]),
    ("zero", lambda t: t.set_column(2, "vector", vec_column(np.zeros((200, 8), np.float32), 8)), ["all-zero"]),
    ("duplicate", lambda t: t.set_column(1, "chunk_index", pa.array(np.zeros(200, np.int64))), ["duplicate"]),
    ("non-integer index", lambda t: t.set_column(1, "chunk_index", pa.array(np.arange(200) + 0.5)),
     ["chunk_index", "integers"]),
    ("integer vectors", lambda t: t.set_column(2, "vector", vec_column(np.ones((200, 8), np.int32), 8)),
     ["float16 or float32"]),
    ("not a list", lambda t: t.set_column(2, "vector", pa.array(np.ones(200, np.float32))), ["fixed-size list"]),
    ("no rows", lambda t: t.slice(0, 0), ["no rows"]),
])
def test_bad_store_gets_one_line_naming_the_file(tmp_path, case, mutate, words):
    path = bad_store(tmp_path, mutate)
    with pytest.raises(InputError) as e:
        load(path)
    one_line(e, str(path), *words)


def test_float64_vectors_are_accepted_and_converted(tmp_path):
    path = bad_store(tmp_path, lambda t: t.set_column(2, "vector", vec_column(
        np.random.default_rng(0).standard_normal((200, 8)), 8)))
    assert load(path).train.chunks.dtype == np.float32


def test_too_short_articles_are_skipped_and_too_few_chunks_refused(tmp_path):
    path = tmp_path / "short.parquet"
    rng = np.random.default_rng(0)
    lengths = [3] * 10 + [9] * 10  # half the articles cannot give a window of context 5
    art = np.repeat(np.arange(20), lengths)
    idx = np.concatenate([np.arange(n) for n in lengths])
    write_store(path, art, idx, rng.standard_normal((len(art), 8)))
    data = load(path, val_fraction=0.5, ood_fraction=0.0, split_seed=3)
    assert data.train.short_articles(5) > 0
    with pytest.raises(InputError) as e:
        data.check_context(9)
    one_line(e, str(path), "too few chunks for context length 9")


@pytest.mark.parametrize("content, words", [
    (b"", ["empty file"]),
    (b"not a zip at all", ["not a valid NPZ"]),
])
def test_bad_npz_bytes(tmp_path, content, words):
    (tmp_path / "train.npz").write_bytes(content)
    _npz(tmp_path / "val.npz")
    with pytest.raises(InputError) as e:
        load(tmp_path / "train.npz")
    one_line(e, "train.npz", *words)


def test_truncated_npz(tmp_path):
    good = _npz(tmp_path / "full.npz").read_bytes()
    (tmp_path / "train.npz").write_bytes(good[: len(good) // 2])
    _npz(tmp_path / "val.npz")
    with pytest.raises(InputError) as e:
        load(tmp_path / "train.npz")
    one_line(e, "train.npz", "not a valid NPZ")


def test_truncated_and_garbage_parquet(tmp_path):
    path = make_store(tmp_path / "t.parquet", articles=20, chunks=10, dim=8)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError) as e:
        load(path)
    one_line(e, "t.parquet", "not a valid Parquet")


@pytest.mark.parametrize("arrays, words", [
    ({"contexts": np.ones((4, 5, 8), np.float32)}, ["missing key 'targets'"]),
    ({"contexts": np.ones((4, 8), np.float32), "targets": np.ones((4, 8), np.float32)}, ["3-D"]),
    ({"contexts": np.ones((4, 5, 8), np.float32), "targets": np.ones((3, 8), np.float32)}, ["3 rows", "4"]),
    ({"contexts": np.ones((4, 5, 8), np.float32), "targets": np.ones((4, 7), np.float32)}, ["dimension 7"]),
    ({"contexts": np.ones((4, 5, 8), np.int64), "targets": np.ones((4, 8), np.int64)}, ["floating point"]),
    ({"contexts": np.full((4, 5, 8), np.nan, np.float32), "targets": np.ones((4, 8), np.float32)}, ["NaN"]),
])
def test_bad_npz_contents(tmp_path, arrays, words):
    np.savez(tmp_path / "train.npz", **arrays)
    _npz(tmp_path / "val.npz")
    with pytest.raises(InputError) as e:
        load(tmp_path / "train.npz")
    one_line(e, "train.npz", *words)


def test_dimension_mismatch_between_splits(tmp_path):
    _npz(tmp_path / "train.npz", d=16)
    _npz(tmp_path / "val.npz", d=12)
    with pytest.raises(InputError) as e:
        load(tmp_path / "train.npz")
    one_line(e, "val.npz", "dimension 12", "16")


def test_missing_file_and_missing_val(tmp_path):
    with pytest.raises(InputError) as e:
        load(tmp_path / "nope.parquet")
    one_line(e, "nope.parquet", "no such file")
    _npz(tmp_path / "alone_train.npz")
    with pytest.raises(InputError) as e:
        load(tmp_path / "alone_train.npz")
    one_line(e, "alone_train.npz", "no validation file")
