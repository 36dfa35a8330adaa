"""Synthetic article stores with a planted forward direction of known strength.

Each article a has a topic centre c_a and an orbit plane (e1_a, e2_a), all orthonormal and random: by default its
own (every article follows its own trajectory), or with ``topics`` = T those of one of T shared topics drawn at
random (articles of a topic travel the same orbit the same way, so a direction recurs across articles), and
``identity`` gives each article a fixed random unit offset u_a of its own on top. Chunk t is

    x_t = normalize(c_a + rho * (cos(phi_t) e1_a + sin(phi_t) e2_a) + identity * u_a + sigma * eps_t)
    phi_{t+1} = phi_t + S + tau * eta_t,                        eps_t ~ N(0, I/D), eta_t ~ N(0, 1)

S is the forward signal: the mean phase advance per chunk, in radians, always in the same sense inside an
article. With S = 0 the phase is a symmetric random walk, the sequence is time-reversible and next and prev
are exchangeable given the context: no model can rank next above prev on average. With S > 0 the direction of
travel can be read off the context and the next chunk extrapolated from it.

The gate's Delta = cos(x_t, x_{t+1}) - cos(x_t, x_{t-1}) has mean ~0 for every S (steps forward and backward
are the same size), so on this data the gate down-weights sequences at random; what S changes is how
predictable the next chunk is. `tune-p7 probe FILE` measures both (see docs/reference.md, "Data formats").
``shuffled`` permutes each article's chunks (the same vectors, no order left): the control in which no direction
can be learned.

    tune-p7 synth --out data.parquet --articles 300 --chunks-per-article 24 --dim 64 \
        --forward-signal 1.0 --seed 0 [--topics 4 --identity 0.7] [--shuffled]
"""
from __future__ import annotations

import argparse

import numpy as np

from tune_p7 import cli
from tune_p7.data.store import write_store
from tune_p7.errors import InputError


def generate(articles: int, chunks_per_article: int, dim: int, forward_signal: float, seed: int = 0,
             rho: float = 1.0, sigma: float = 0.35, tau: float = 0.3, topics: int | None = None,
             identity: float = 0.0, shuffled: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(article_id (M,), chunk_index (M,), vectors (M, dim) float32 unit rows), M = articles * chunks_per_article.
    ``topics``: articles share the bases of that many topics (None: each its own); ``shuffled``: the same vectors
    with each article's chunk order permuted."""
    if dim < 3:
        raise ValueError("dim must be at least 3")
    rng = np.random.default_rng(seed)
    n, t = articles, chunks_per_article
    basis = np.linalg.qr(rng.standard_normal((topics or n, dim, 3)))[0]  # (., dim, 3): c, e1, e2 orthonormal
    if topics:
        basis = basis[rng.integers(topics, size=n)]  # (n, dim, 3): each article takes its topic's
    phase = rng.uniform(0, 2 * np.pi, (n, 1)) + np.cumsum(
        np.concatenate([np.zeros((n, 1)), forward_signal + tau * rng.standard_normal((n, t - 1))], axis=1), axis=1)
    coef = np.stack([np.ones_like(phase), rho * np.cos(phase), rho * np.sin(phase)], axis=-1)  # (n, t, 3)
    x = np.einsum("ntk,ndk->ntd", coef, basis) + sigma * rng.standard_normal((n, t, dim)) / np.sqrt(dim)
    if identity:  # its own generator, like the shuffle: the other draws do not depend on it
        u = np.random.default_rng([seed, 2]).standard_normal((n, 1, dim))
        x += identity * u / np.linalg.norm(u, axis=-1, keepdims=True)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    if shuffled:  # its own generator: the vectors stay those of the ordered store with the same seed
        x = np.take_along_axis(x, np.random.default_rng([seed, 1]).permuted(np.tile(np.arange(t), (n, 1)), axis=1)
                               [..., None], axis=1)
    return np.repeat(np.arange(n), t), np.tile(np.arange(t), n), x.reshape(n * t, dim).astype(np.float32)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="tune-p7 synth", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="article store to write (.parquet)")
    p.add_argument("--articles", type=int, default=300)
    p.add_argument("--chunks-per-article", type=int, default=24)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--forward-signal", type=float, default=1.0, help="S: mean phase advance per chunk (radians)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--topics", type=int, help="articles share the orbits of this many topics [default: each its own]")
    p.add_argument("--identity", type=float, default=0.0, help="weight of each article's own fixed offset")
    p.add_argument("--shuffled", action="store_true", help="permute each article's chunks (no order to learn)")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float32")
    a = p.parse_args(argv)
    if a.topics is not None and a.topics < 1:
        raise InputError("--topics", f"expected an integer >= 1, got {a.topics}")
    art, idx, vec = generate(a.articles, a.chunks_per_article, a.dim, a.forward_signal, a.seed, topics=a.topics,
                             identity=a.identity, shuffled=a.shuffled)
    write_store(a.out, art, idx, vec, dtype=np.dtype(a.dtype))
    print(f"wrote {a.out}: {a.articles} articles x {a.chunks_per_article} chunks, dim {a.dim}, S={a.forward_signal}"
          + (f", {a.topics} topics" if a.topics else "") + (", shuffled" if a.shuffled else ""))


if __name__ == "__main__":
    cli.run(main)
