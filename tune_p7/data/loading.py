"""Data: every source becomes one chunk matrix per split plus integer index arrays over it.

A split holds its unique chunks once (``chunks`` (M, D), unit-norm, articles contiguous) and the
article boundaries (``offsets``). A window of context length K is a row of K+1 chunk indices (K context
chunks, then the target); windows never cross an article and are never materialised as vectors until a
batch is gathered (batches.py). Sources:

- an article store (Parquet, see ``store.py``): split by article (seeded), windows of any K;
- the seed's NPZ files (``contexts`` (N, K0, D), ``targets`` (N, D)), one per split: identical vectors are
  merged into one chunk (so a chunk id is the same wherever it appears), articles are read from an optional
  ``article_ids`` (N,) key or else inferred as the groups of windows that share chunks; any K <= K0 is served
  by taking the last K context chunks.

The chunk id used for masking is the chunk's row in its split's matrix.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tune_p7.data.store import read_store
from tune_p7.errors import InputError

SPLITS = ("train", "val", "ood")


@dataclass
class Split:
    name: str
    source: str
    chunks: np.ndarray  # (M, D) float16/float32, unit rows, articles contiguous
    offsets: np.ndarray  # (A+1,) int64: article a owns chunk rows offsets[a]:offsets[a+1]
    fixed_windows: np.ndarray | None = None  # (N, K0+1) int64 for NPZ sources; None for stores

    @property
    def dim(self) -> int:
        return self.chunks.shape[1]

    @property
    def max_context(self) -> int | None:
        return None if self.fixed_windows is None else self.fixed_windows.shape[1] - 1

    def windows(self, k: int) -> np.ndarray:
        """(N, k+1) int64 chunk rows of every window of context length k (last column: the target)."""
        if self.fixed_windows is not None:
            if k > self.max_context:
                raise InputError(self.source, f"context length {k} requested but the file holds contexts of "
                                              f"{self.max_context} chunks")
            return self.fixed_windows[:, -(k + 1):]
        lengths = np.diff(self.offsets)
        per_article = np.maximum(lengths - k, 0)
        if per_article.sum() == 0:
            raise InputError(self.source, f"too few chunks for context length {k}: no article of the {self.name} "
                                          f"split has {k + 1} chunks (longest: {lengths.max()})")
        starts = np.repeat(self.offsets[:-1], per_article)
        first = np.repeat(np.cumsum(per_article) - per_article, per_article)
        starts = starts + np.arange(per_article.sum()) - first
        return starts[:, None] + np.arange(k + 1)[None, :]

    def short_articles(self, k: int) -> int:
        """How many articles are too short to give one window of context length k."""
        if self.fixed_windows is not None:
            return 0
        return int((np.diff(self.offsets) < k + 1).sum())


@dataclass
class P7Data:
    source: str
    train: Split
    val: Split
    ood: Split | None = None

    @property
    def dim(self) -> int:
        return self.train.dim

    def split(self, name: str) -> Split:
        found = getattr(self, name, None)
        if found is None:
            raise InputError(self.source, f"the data has no '{name}' split")
        return found

    def check_context(self, k: int) -> None:
        """Raise InputError unless every split can give windows of context length k."""
        for s in (self.train, self.val, self.ood):
            if s is not None:
                s.windows(k)


# ----------------------------------------------------------------------------------------------- loading
def load(path, val_fraction: float = 0.1, ood_fraction: float = 0.1, split_seed: int = 0) -> P7Data:
    """Load a dataset from an article store (.parquet), an NPZ train file or a folder of split files."""
    path = Path(path)
    if path.is_dir():
        for ext in (".parquet", ".npz"):
            if (path / f"train{ext}").is_file():
                return load(path / f"train{ext}", val_fraction, ood_fraction, split_seed)
        raise InputError(path, "folder holds no train.npz or train.parquet")
    if not path.exists():
        raise InputError(path, "no such file")
    siblings = _siblings(path)
    if path.suffix == ".parquet" and "val" not in siblings:
        return split_store(path, val_fraction, ood_fraction, split_seed)
    if path.suffix == ".parquet":
        splits = {name: store_split(p, name) for name, p in siblings.items()}
    elif path.suffix == ".npz":
        if "val" not in siblings:
            raise InputError(path, "no validation file beside it (expected val.npz or the name with "
                                   "'train' replaced by 'val')")
        splits = {name: npz_split(p, name) for name, p in siblings.items()}
    else:
        raise InputError(path, "unknown data format (expected .npz, .parquet or a folder)")
    data = P7Data(str(path), splits["train"], splits["val"], splits.get("ood"))
    _check_dims(data)
    return data


def _siblings(train: Path) -> dict[str, Path]:
    """The split files of a train file: train.X -> val.X / ood.X, or *train* -> *val* / *ood* in the name."""
    found = {"train": train}
    if "train" not in train.name:
        return found
    for name in ("val", "ood"):
        other = train.with_name(train.name.replace("train", name))
        if other.exists():
            found[name] = other
    return found


def _check_dims(data: P7Data) -> None:
    for s in (data.val, data.ood):
        if s is not None and s.dim != data.train.dim:
            raise InputError(s.source, f"vector dimension {s.dim} differs from the train split's {data.train.dim} "
                                       f"({data.train.source})")


def check_vectors(vectors: np.ndarray, source) -> np.ndarray:
    """Validate (M, D) vectors and return them unit-normalised as float16 (kept) or float32.

    float64 is accepted and converted to float32; integer or other dtypes, NaN/Inf and zero vectors are refused.
    """
    if vectors.dtype.kind != "f":
        raise InputError(source, f"vectors must be floating point, got {vectors.dtype}")
    if vectors.dtype == np.float64:
        vectors = vectors.astype(np.float32)
    out = np.empty_like(vectors)
    step = 65536
    for i in range(0, len(vectors), step):
        block = vectors[i:i + step].astype(np.float32)
        bad = ~np.isfinite(block).all(axis=1)
        if bad.any():
            raise InputError(source, f"{int(bad.sum())} vector(s) hold NaN or Inf (first: row {i + int(np.argmax(bad))})")
        norms = np.linalg.norm(block, axis=1)
        zero = norms < 1e-12
        if zero.any():
            raise InputError(source, f"{int(zero.sum())} all-zero vector(s) (first: row {i + int(np.argmax(zero))})")
        out[i:i + step] = block / norms[:, None]
    return out


def store_split(path: Path, name: str) -> Split:
    """A whole article store as one split."""
    store = read_store(path)
    return _split_from_store(path, name, store.article_id, check_vectors(store.vectors, path))


def split_store(path: Path, val_fraction: float, ood_fraction: float, seed: int) -> P7Data:
    """Split one article store by article (seeded permutation; no article in two splits)."""
    store = read_store(path)
    vectors = check_vectors(store.vectors, path)
    articles = np.unique(store.article_id)
    n_val = int(round(len(articles) * val_fraction))
    n_ood = int(round(len(articles) * ood_fraction))
    if len(articles) - n_val - n_ood < 1 or n_val < 1:
        raise InputError(path, f"{len(articles)} article(s) are too few to split into train/val"
                               f"{'/ood' if n_ood else ''}")
    perm = np.random.default_rng(seed).permutation(articles)
    groups = {"val": perm[:n_val], "ood": perm[n_val:n_val + n_ood], "train": perm[n_val + n_ood:]}
    splits = {}
    for name, ids in groups.items():
        if len(ids) == 0:
            continue
        rows = np.isin(store.article_id, ids)
        splits[name] = _split_from_store(path, name, store.article_id[rows], vectors[rows])
    return P7Data(str(path), splits["train"], splits["val"], splits.get("ood"))


def _split_from_store(path, name, article_id, vectors) -> Split:
    starts = np.flatnonzero(np.r_[True, article_id[1:] != article_id[:-1]])
    return Split(name, str(path), np.ascontiguousarray(vectors), np.r_[starts, len(article_id)].astype(np.int64))


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if path.stat().st_size == 0:
        raise InputError(path, "empty file")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            for key in ("contexts", "targets"):
                if key not in keys:
                    raise InputError(path, f"missing key '{key}' (has: {', '.join(sorted(keys)) or 'nothing'})")
            return {k: z[k] for k in keys & {"contexts", "targets", "article_ids"}}
    except InputError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise InputError(path, f"not a valid NPZ file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None


def npz_split(path: Path, name: str) -> Split:
    """One seed-format NPZ file as a split (identical vectors merged into one chunk)."""
    z = _read_npz(path)
    ctx, tgt = z["contexts"], z["targets"]
    if ctx.ndim != 3:
        raise InputError(path, f"'contexts' must be 3-D (N, K, D), got shape {ctx.shape}")
    if tgt.ndim != 2:
        raise InputError(path, f"'targets' must be 2-D (N, D), got shape {tgt.shape}")
    n, k0, d = ctx.shape
    if tgt.shape[0] != n:
        raise InputError(path, f"'targets' has {tgt.shape[0]} rows but 'contexts' has {n}")
    if tgt.shape[1] != d:
        raise InputError(path, f"'targets' has dimension {tgt.shape[1]} but 'contexts' has {d}")
    if n == 0:
        raise InputError(path, "no sequences")
    if k0 < 2:
        raise InputError(path, f"contexts of {k0} chunk(s); P7 needs at least 2")
    rows = np.concatenate([ctx.reshape(n * k0, d), tgt], axis=0)  # context rows first, then targets
    del ctx, tgt
    rows = check_vectors(rows, path)
    uniq, inverse = _dedup(rows)
    chunk_of = np.concatenate([inverse[:n * k0].reshape(n, k0), inverse[n * k0:, None]], axis=1)
    if "article_ids" in z:
        art = np.asarray(z["article_ids"])
        if art.shape != (n,) or art.dtype.kind not in "iu":
            raise InputError(path, f"'article_ids' must be (N,) integers, got {art.dtype} {art.shape}")
        label = np.empty(len(uniq), dtype=np.int64)
        label[chunk_of.reshape(-1)] = np.repeat(art.astype(np.int64), k0 + 1)
    else:
        label = _components(chunk_of, len(uniq))
    order = np.argsort(label, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    label = label[order]
    starts = np.flatnonzero(np.r_[True, label[1:] != label[:-1]])
    return Split(name, str(path), np.ascontiguousarray(rows[uniq[order]]), np.r_[starts, len(label)].astype(np.int64),
                 rank[chunk_of])


def _dedup(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge identical rows by a 64-bit hash of their bytes: (first row of each chunk, chunk index per row)."""
    bits = rows.view(np.uint16 if rows.dtype == np.float16 else np.uint32)
    mult = np.random.default_rng(12345).integers(1, 2**63, size=bits.shape[1], dtype=np.uint64) | np.uint64(1)
    keys = np.empty(len(rows), dtype=np.uint64)
    for i in range(0, len(rows), 32768):
        keys[i:i + 32768] = (bits[i:i + 32768].astype(np.uint64) * mult).sum(axis=1)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


def _components(windows: np.ndarray, m: int) -> np.ndarray:
    """Label each chunk with the smallest chunk id of the group of windows it is connected to by sharing."""
    label = np.arange(m)
    while True:
        low = label[windows].min(axis=1)
        new = label.copy()
        np.minimum.at(new, windows, low[:, None])
        new = new[new]  # pointer jumping: converge in O(log) rounds on long articles
        if np.array_equal(new, label):
            return label
        label = new
