"""Synthetic stores: the default draw is unchanged by the new options, topics share their orbits, a shuffled store
holds the same vectors as the ordered one, and ``tune-p7 synth`` writes them."""
import numpy as np
import pytest

from tune_p7.data.store import read_store
from tune_p7.data.synth import generate, main
from tune_p7.errors import InputError

ARGS = dict(articles=12, chunks_per_article=8, dim=16, forward_signal=1.0, seed=3)


def test_articles_of_a_topic_travel_one_orbit_and_their_own_articles_do_not():
    """Each article's chunks span its own 3-dimensional basis (plus noise): with 2 topics, the 12 articles' noise-free
    chunks lie in 2 such subspaces (rank 6), without topics in 12 (rank 16, the whole space)."""
    def rank(**kw):
        return np.linalg.matrix_rank(generate(**ARGS, sigma=0.0, **kw)[2], tol=1e-4)

    assert rank(topics=2) == 6 and rank() == 16


def test_a_shuffled_store_holds_each_articles_vectors_in_another_order():
    art, idx, ordered = generate(**ARGS, topics=2, identity=0.5)
    _, _, shuffled = generate(**ARGS, topics=2, identity=0.5, shuffled=True)
    assert not np.array_equal(ordered, shuffled)
    for a in np.unique(art):
        rows = art == a
        assert sorted(map(tuple, ordered[rows])) == sorted(map(tuple, shuffled[rows]))
    np.testing.assert_array_equal(generate(**ARGS)[2], generate(**ARGS, topics=None, identity=0.0)[2])


def test_the_command_writes_a_topic_store_and_refuses_zero_topics(tmp_path, capsys):
    out = tmp_path / "t.parquet"
    main(["--out", str(out), "--articles", "12", "--chunks-per-article", "8", "--dim", "16", "--topics", "2",
          "--identity", "0.5", "--shuffled", "--seed", "3"])
    np.testing.assert_allclose(read_store(out).vectors, generate(**ARGS, topics=2, identity=0.5, shuffled=True)[2],
                               atol=1e-6)
    assert "2 topics, shuffled" in capsys.readouterr().out
    with pytest.raises(InputError, match="^--topics: expected an integer >= 1, got 0$"):
        main(["--out", str(tmp_path / "bad.parquet"), "--topics", "0"])
    assert not (tmp_path / "bad.parquet").exists()
