"""Conversion: store -> NPZ -> store is exact; an NPZ without article ids is refused clearly."""
import numpy as np
import pytest

from conftest import make_store
from tune_p7.data.convert import npz_to_store, store_to_npz
from tune_p7.data.store import read_store
from tune_p7.errors import InputError


def test_round_trip(tmp_path):
    src = make_store(tmp_path / "a.parquet", articles=12, chunks=9, dim=8)
    assert store_to_npz(src, tmp_path / "w.npz", 5) == 12 * (9 - 5)
    with np.load(tmp_path / "w.npz") as z:
        assert z["contexts"].shape == (48, 5, 8) and z["targets"].shape == (48, 8)
    assert npz_to_store(tmp_path / "w.npz", tmp_path / "b.parquet") == 12 * 9
    a, b = read_store(src), read_store(tmp_path / "b.parquet")
    assert np.array_equal(a.article_id, b.article_id) and np.array_equal(a.chunk_index, b.chunk_index)
    assert np.array_equal(a.vectors, b.vectors)


def test_npz_without_article_ids_is_refused(tmp_path):
    np.savez(tmp_path / "seed.npz", contexts=np.ones((2, 5, 4), np.float32), targets=np.ones((2, 4), np.float32))
    with pytest.raises(InputError, match="seed.npz: has no article_ids / target_index: its windows cannot be placed"):
        npz_to_store(tmp_path / "seed.npz", tmp_path / "x.parquet")
