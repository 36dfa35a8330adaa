"""Bytes on disk: the article store against the seed's NPZ layout for the same windows.

    python bench/store_size.py [--quick]

A synthetic store at 768-d (articles of 24 chunks) is written with tune_p7.data.store.write_store (float16 vectors,
zstd, the default) and as float32; the seed-format NPZ of the same windows at context 5 is written as the seed
did (np.savez: ``contexts`` (N, 5, 768) float32 + ``targets`` (N, 768) float32). ``store_vs_npz_bytes`` =
float16 store bytes / NPZ bytes. Also the largest cosine error of the float16 rounding.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from common import parser, table, write_result
from tune_p7.data.loading import _split_from_store
from tune_p7.data.store import read_store, write_store
from tune_p7.data.synth import generate


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    a = p.parse_args(argv)
    articles = 120 if a.quick else 600
    art, idx, vec = generate(articles, 24, 768, forward_signal=1.0, seed=0)
    work = Path(tempfile.mkdtemp(prefix="tune_p7_bench_store_"))
    try:
        f16, f32, npz = work / "store16.parquet", work / "store32.parquet", work / "seed.npz"
        write_store(f16, art, idx, vec)
        write_store(f32, art, idx, vec, dtype=np.float32)
        rows = _split_from_store("mem", "all", art, vec).windows(5)
        np.savez(npz, contexts=vec[rows[:, :-1]], targets=vec[rows[:, -1]])
        sizes = {k: v.stat().st_size for k, v in (("store_f16", f16), ("store_f32", f32), ("npz", npz))}
        back = read_store(f16).vectors.astype(np.float32)
        cos_err = float(np.max(np.abs(1 - (back * vec).sum(1) / np.linalg.norm(back, axis=1))))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = {"articles": articles, "chunks": len(vec), "windows": len(rows), "dim": 768, "bytes": sizes,
           "store_vs_npz_bytes": sizes["store_f16"] / sizes["npz"],
           "store_f32_vs_npz_bytes": sizes["store_f32"] / sizes["npz"], "float16_max_cos_error": cos_err,
           "seed_scale_projection_gb": {"npz": 87_000 * 6 * 768 * 4 / 1e9,
                                        "store_f16": sizes["store_f16"] / len(rows) * 87_000 / 1e9}}
    print(table([{"file": k, "bytes": v, "MB": v / 1e6, "vs npz": v / sizes["npz"]} for k, v in sizes.items()]))
    print(f"\n{len(rows)} windows (ctx 5) from {len(vec)} chunks; store_vs_npz_bytes = {out['store_vs_npz_bytes']:.3f} "
          f"(target <= 0.2); float16 rounding: max cosine error {cos_err:.1e}")
    write_result("store_size", out, quick=a.quick)


if __name__ == "__main__":
    main()
