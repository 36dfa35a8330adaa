"""The article store: one Parquet file of ordered chunk embeddings.

Columns: ``article_id`` (int64), ``chunk_index`` (int64, order inside the article), ``vector``
(fixed-size list of float16 or float32, dimension D) and optionally ``text`` (string).
Rows are written sorted by (article_id, chunk_index).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tune_p7.errors import InputError

REQUIRED = ("article_id", "chunk_index", "vector")


@dataclass
class Store:
    article_id: np.ndarray  # (M,) int64, sorted, articles contiguous
    chunk_index: np.ndarray  # (M,) int64, increasing inside an article
    vectors: np.ndarray  # (M, D) float16 or float32
    text: list[str] | None = None


def write_store(path, article_id, chunk_index, vectors, text=None, dtype=np.float16) -> None:
    """Write an article store, rows sorted by (article_id, chunk_index)."""
    article_id = np.asarray(article_id, dtype=np.int64)
    chunk_index = np.asarray(chunk_index, dtype=np.int64)
    vectors = np.ascontiguousarray(vectors, dtype=dtype)
    order = np.lexsort((chunk_index, article_id))
    m, d = vectors.shape
    flat = pa.array(vectors[order].reshape(-1))
    columns = {
        "article_id": pa.array(article_id[order]),
        "chunk_index": pa.array(chunk_index[order]),
        "vector": pa.FixedSizeListArray.from_arrays(flat, d),
    }
    if text is not None:
        columns["text"] = pa.array([text[i] for i in order], type=pa.string())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path, compression="zstd")


def read_store(path, with_text: bool = False) -> Store:
    """Read and validate an article store; any problem raises InputError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(path, f"not a valid Parquet file ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}; an article store needs {', '.join(REQUIRED)}")
    if table.num_rows == 0:
        raise InputError(path, "no rows")
    vec_type = table.schema.field("vector").type
    if not pa.types.is_fixed_size_list(vec_type):
        raise InputError(path, f"column 'vector' must be a fixed-size list of float16/float32, got {vec_type}")
    if not (pa.types.is_floating(vec_type.value_type)):
        raise InputError(path, f"column 'vector' must hold float16 or float32 values, got {vec_type.value_type}")
    ids = {}
    for name in ("article_id", "chunk_index"):
        col_type = table.schema.field(name).type
        if not pa.types.is_integer(col_type):
            raise InputError(path, f"column '{name}' must be integers, got {col_type}")
        col = table.column(name)
        if col.null_count:
            raise InputError(path, f"column '{name}' has {col.null_count} null value(s)")
        ids[name] = col.to_numpy().astype(np.int64)
    vec_col = table.column("vector").combine_chunks()
    if vec_col.null_count:
        raise InputError(path, f"column 'vector' has {vec_col.null_count} null row(s)")
    d = vec_type.list_size
    vectors = vec_col.flatten().to_numpy(zero_copy_only=False).reshape(-1, d)
    if vectors.dtype == np.float64:
        vectors = vectors.astype(np.float32)
    order = np.lexsort((ids["chunk_index"], ids["article_id"]))
    if not np.array_equal(order, np.arange(len(order))):
        vectors = vectors[order]
        ids = {k: v[order] for k, v in ids.items()}
    same = (np.diff(ids["article_id"]) == 0) & (np.diff(ids["chunk_index"]) == 0)
    if same.any():
        i = int(np.flatnonzero(same)[0])
        raise InputError(
            path, f"duplicate (article_id, chunk_index) = ({ids['article_id'][i]}, {ids['chunk_index'][i]})"
        )
    text = None
    if with_text and "text" in table.column_names:
        text = table.column("text").to_pylist()
        if not np.array_equal(order, np.arange(len(order))):
            text = [text[i] for i in order]
    return Store(ids["article_id"], ids["chunk_index"], np.ascontiguousarray(vectors), text)
