"""Cross-fitting folds for the confirmation: every article that no search decision looked at is scored once, by
models that never trained on it.

The search ranks on val, so train and the held-out split (ood) are the articles no decision used: their union,
the pool, is cut into F folds by article (seeded, balanced by chunks); the run of fold f trains on the pool
without fold f and is scored on fold f. Windows of one article never straddle two folds.
"""
from __future__ import annotations

import numpy as np

from tune_p7.data.loading import P7Data, Split
from tune_p7.errors import InputError

HELDOUT = "heldout"  # the name of a fold's scored split


def concat(name: str, splits: list[Split]) -> Split:
    """The articles of ``splits`` as one split, in order (fixed windows shifted to the new chunk rows)."""
    chunks = np.concatenate([s.chunks for s in splits])
    shifts = np.cumsum([0] + [len(s.chunks) for s in splits[:-1]])
    offsets = np.concatenate([[0]] + [s.offsets[1:] + shift for s, shift in zip(splits, shifts)]).astype(np.int64)
    fixed = None
    if any(s.fixed_windows is not None for s in splits):
        if not all(s.fixed_windows is not None for s in splits):
            raise InputError(splits[0].source, "cannot pool an article store with seed-format windows")
        width = min(s.fixed_windows.shape[1] for s in splits)
        fixed = np.concatenate([s.fixed_windows[:, -width:] + shift for s, shift in zip(splits, shifts)])
    return Split(name, splits[0].source, chunks, offsets, fixed)


def subset(split: Split, articles: np.ndarray, name: str) -> Split:
    """The split's articles ``articles`` (indices, ascending), chunk rows and fixed windows renumbered."""
    lengths = np.diff(split.offsets)
    rows = np.concatenate([np.arange(split.offsets[a], split.offsets[a + 1]) for a in articles])
    offsets = np.r_[0, np.cumsum(lengths[articles])].astype(np.int64)
    fixed = None
    if split.fixed_windows is not None:
        new_row = np.full(len(split.chunks), -1, dtype=np.int64)
        new_row[rows] = np.arange(len(rows))
        keep = (new_row[split.fixed_windows] >= 0).all(axis=1)
        fixed = new_row[split.fixed_windows[keep]]
    return Split(name, split.source, np.ascontiguousarray(split.chunks[rows]), offsets, fixed)


def pool(data: P7Data) -> Split:
    """train and ood (where the data has one) as one split: the articles no search decision looked at."""
    return concat("pool", [data.train] + ([data.ood] if data.ood is not None else []))


def assign(split: Split, folds: int, seed: int) -> np.ndarray:
    """(A,) the fold of each article: a seeded order, then each article to the fold with the fewest chunks so
    far (folds of about equal size whatever the articles' lengths)."""
    lengths = np.diff(split.offsets)
    if folds < 2 or len(lengths) < folds:
        raise InputError(split.source, f"{len(lengths)} train/held-out article(s) cannot make {folds} "
                                       "cross-fitting folds (need at least 2 folds and an article in each)")
    order = np.random.default_rng(seed).permutation(len(lengths))
    fold, size = np.empty(len(lengths), dtype=np.int64), np.zeros(folds)
    for a in order[np.argsort(-lengths[order], kind="stable")]:
        fold[a] = int(np.argmin(size))
        size[fold[a]] += lengths[a]
    return fold


def fold_data(data: P7Data, fold: int, folds: int, seed: int) -> tuple[P7Data, np.ndarray]:
    """(the data of fold ``fold``'s run: train = the pool without the fold, val as it is, ood = the fold, named
    HELDOUT; the fold's articles as indices into the pool, in the order its split holds them)."""
    everything = pool(data)
    which = assign(everything, folds, seed)
    mine = np.flatnonzero(which == fold)
    rest = np.flatnonzero(which != fold)
    return (P7Data(data.source, subset(everything, rest, "train"), data.val, subset(everything, mine, HELDOUT)),
            mine)


def window_mask(split: Split, k: int, common: int) -> np.ndarray:
    """(N,) bool over split.windows(k): the windows that exist at context length ``common`` >= k too (their
    target is at least ``common`` chunks into its article), so configurations of different context lengths are
    compared on the same windows. Seed-format windows all have every context length the file holds."""
    windows = split.windows(k)
    if split.fixed_windows is not None or common <= k:
        return np.ones(len(windows), dtype=bool)
    target = windows[:, -1]
    start = split.offsets[np.searchsorted(split.offsets, target, side="right") - 1]
    return target - start >= common
