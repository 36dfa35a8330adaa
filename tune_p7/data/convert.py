"""Convert between the article store and the seed's NPZ layout.

    tune-p7 convert to-npz STORE.parquet OUT.npz --context-length K
    tune-p7 convert to-store IN.npz OUT.parquet

to-npz writes every window of context length K: ``contexts`` (N, K, D), ``targets`` (N, D), plus
``article_ids`` (N,) and ``target_index`` (N,), which make the way back exact. to-store needs those two keys:
the seed's own NPZ files lack them, so their windows cannot be placed in articles (say so, refuse).
"""
from __future__ import annotations

import argparse

import numpy as np

from tune_p7 import cli
from tune_p7.data.loading import _split_from_store, check_vectors
from tune_p7.data.store import read_store, write_store
from tune_p7.errors import InputError


def store_to_npz(store_path, out, k: int) -> int:
    """Write all windows of context length k of a store as seed-format NPZ; returns the window count."""
    store = read_store(store_path)
    split = _split_from_store(store_path, "all", store.article_id, check_vectors(store.vectors, store_path))
    rows = split.windows(k)
    vec = store.vectors.astype(np.float32)
    np.savez(out, contexts=vec[rows[:, :-1]], targets=vec[rows[:, -1]], article_ids=store.article_id[rows[:, -1]],
             target_index=store.chunk_index[rows[:, -1]])
    return len(rows)


def npz_to_store(npz_path, out) -> int:
    """Rebuild the article store from an NPZ with article ids; returns the chunk count."""
    with np.load(npz_path, allow_pickle=False) as z:
        missing = [key for key in ("contexts", "targets", "article_ids", "target_index") if key not in z.files]
        if missing:
            raise InputError(npz_path, f"has no {' / '.join(missing)}: its windows cannot be placed in articles "
                                       "(the seed's NPZ files lack article ids), so no article store can be built")
        ctx, tgt, art, idx = z["contexts"], z["targets"], z["article_ids"], z["target_index"]
    n, k, d = ctx.shape
    arts = np.repeat(art.astype(np.int64), k + 1)
    pos = (idx.astype(np.int64)[:, None] + np.arange(-k, 1)[None, :]).reshape(-1)
    vecs = np.concatenate([ctx, tgt[:, None]], axis=1).reshape(-1, d)
    keys, first = np.unique(np.stack([arts, pos], axis=1), axis=0, return_index=True)
    write_store(out, keys[:, 0], keys[:, 1], vecs[first], dtype=vecs.dtype if vecs.dtype == np.float16 else np.float32)
    return len(keys)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tune-p7 convert", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a1 = sub.add_parser("to-npz", help="article store -> seed NPZ windows")
    a1.add_argument("store")
    a1.add_argument("out")
    a1.add_argument("--context-length", type=int, default=5)
    a2 = sub.add_parser("to-store", help="seed NPZ (with article_ids, target_index) -> article store")
    a2.add_argument("npz")
    a2.add_argument("out")
    a = p.parse_args(argv)
    if a.cmd == "to-npz":
        print(f"wrote {a.out}: {store_to_npz(a.store, a.out, a.context_length)} windows")
    else:
        print(f"wrote {a.out}: {npz_to_store(a.npz, a.out)} chunks")
    return 0


if __name__ == "__main__":
    cli.run(main)
