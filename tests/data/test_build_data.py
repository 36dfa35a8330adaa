"""The real-text builder: finding and reading documents, refusing bad input, and a store built with the real
packaged all-MiniLM-L6-v2 (the embedding extra, marker ``data_extra``)."""
from __future__ import annotations

import importlib.util
import re
import sys

import numpy as np
import pytest

from sample_docs import write_docs
from tune_p7.data.build_data import article_id, build, find_documents
from tune_p7.data.loading import load
from tune_p7.data.store import read_store
from tune_p7.errors import InputError

HAVE_EXTRA = importlib.util.find_spec("sentence_transformers") is not None


def test_find_documents_and_bad_input(tmp_path):
    docs = write_docs(tmp_path)
    found = find_documents([docs])
    assert [r for _, r in found] == ["concert.txt", "queueing.rst", "sub/garden.md"]
    assert article_id("sub/garden.md") == article_id("sub/garden.md") >= 0
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no .txt, .md or .rst files found"):
        find_documents([tmp_path / "empty"])
    with pytest.raises(InputError, match="unsupported file type"):
        find_documents([docs / "ignored.py"])
    binary = tmp_path / "bin" / "blob.txt"
    binary.parent.mkdir()
    binary.write_bytes(b"\x00\x01\x02binary")
    with pytest.raises(InputError, match=r"blob\.txt: not readable text"):
        build([binary.parent], tmp_path / "out.parquet")
    latin = tmp_path / "latin.md"
    latin.write_bytes("caf\xe9 au lait, a long enough paragraph".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin\.md: not readable text \(not UTF-8"):
        build([latin], tmp_path / "out.parquet")


def test_missing_extra_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("A paragraph of plain text that is long enough to be kept as a chunk. " * 3)
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails as if not installed
    with pytest.raises(InputError, match=r"pip install -r requirements-data\.txt"):
        build([tmp_path / "a.txt"], tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()


# ------------------------------------------------------------------------------------- real model
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not HAVE_EXTRA:
        pytest.skip("needs the embedding extra (pip install -r requirements-data.txt)")
    root = tmp_path_factory.mktemp("build")
    docs = write_docs(root)
    out = root / "store.parquet"
    info = build([docs], out, max_chars=260, min_chars=60, batch_size=8, progress=False)
    return docs, out, info


@pytest.mark.data_extra
@pytest.mark.skipif(not HAVE_EXTRA, reason="needs the embedding extra: sentence_transformers not importable "
                                           "(pip install -r requirements-data.txt)")
class TestRealModel:
    def test_store_layout(self, built):
        docs, out, info = built
        store = read_store(out, with_text=True)
        assert store.vectors.dtype == np.float16 and store.vectors.shape[1] == 384
        norms = np.linalg.norm(store.vectors.astype(np.float32), axis=1)
        assert np.allclose(norms, 1.0, atol=5e-3)
        expected = {article_id(r): r for r in ("concert.txt", "queueing.rst", "sub/garden.md")}
        assert set(np.unique(store.article_id)) == set(expected)
        assert info["articles"] == 3 and info["chunks"] == len(store.article_id)
        for aid, rel in expected.items():
            rows = np.flatnonzero(store.article_id == aid)
            assert len(rows) >= 2
            assert list(store.chunk_index[rows]) == list(range(len(rows)))
            texts = [store.text[i] for i in rows]
            source = (docs / rel).read_text()
            # chunk i's text comes before chunk i+1's in the source: compare the paragraph tokens they hold
            tokens = [re.findall(r"Token (\w+)\.", t) for t in texts]
            flat = [t for ts in tokens for t in ts]
            assert flat == re.findall(r"Token (\w+)\.", source), rel
            assert all(tokens[i] and tokens[i + 1] and source.index(tokens[i][-1]) < source.index(tokens[i + 1][0])
                       for i in range(len(tokens) - 1) if tokens[i] and tokens[i + 1])
        alltext = "\n".join(store.text)
        for bad in (":func:", ":mod:", ".. note::", "====", "----", "print(", "```", "**"):
            assert bad not in alltext, bad

    def test_near_duplicates_embed_close(self, built):
        _, out, _ = built
        store = read_store(out, with_text=True)
        v = store.vectors.astype(np.float32)

        def row(word):
            (i,) = [k for k, t in enumerate(store.text) if word in t]
            return v[i]
        bakery, bakery2 = row("at six in the morning"), row("at seven in the morning")
        glacier, volcano, concert = row("Token rst05."), row("Token rst06."), row("Token txt01.")
        near = float(bakery @ bakery2)
        far = max(float(bakery @ x) for x in (glacier, volcano, concert))
        assert near > 0.9, near
        assert far < 0.4 and near - far > 0.5, (near, far)
        print(f"near-duplicate cos {near:.3f}, unrelated max cos {far:.3f}")

    def test_rebuild_is_byte_identical_and_loads(self, built, tmp_path):
        docs, out, _ = built
        again = tmp_path / "again.parquet"
        build([docs], again, max_chars=260, min_chars=60, batch_size=8, progress=False)
        assert again.read_bytes() == out.read_bytes()
        # tune_p7.data.loading.load splits by article: needs >= 3 articles for train/val/ood
        data = load(again, val_fraction=0.34, ood_fraction=0.33)
        assert data.dim == 384
        assert len(data.train.offsets) == 2 and len(data.val.offsets) == 2

    def test_cli_errors_one_line(self, tmp_path):
        from conftest import run_cli
        r = run_cli("-m", "tune_p7.data.build_data", "--input", tmp_path / "missing", "--out", tmp_path / "o.parquet")
        assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "missing: no such file" in r.stderr
        (tmp_path / "a.txt").write_text("A paragraph of plain text that is long enough to be kept as a chunk. " * 3)
        r = run_cli("-m", "tune_p7.data.build_data", "--input", tmp_path / "a.txt", "--out", tmp_path / "o.parquet",
                    "--model", tmp_path / "no-such-model")
        assert r.returncode == 2 and "cannot load the model" in r.stderr, r.stderr
        assert r.stderr.strip().count("\n") == 0
