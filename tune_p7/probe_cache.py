"""The search's data probe, kept by what it depends on: a search on data probed before (the same file and vectors,
context length and gates, the same tune_p7 source and torch) reads the probe instead of computing it again. On the
shipped data the probe costs 2.4-3.5 CPU-s and, in the launcher, torch's import; on seed-scale data minutes.

The cache is ``$TUNE_P7_PROBE_CACHE``, else ``$XDG_CACHE_HOME/tune_p7/probes``, else ``~/.cache/tune_p7/probes``:
one JSON file of about 12 KB per key (nothing removes old ones). A file that is not a probe is computed again and
replaced; a cache that cannot be found, read or written is left alone (the experiment stores its probe either way).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable

import numpy as np

PACKAGE = Path(__file__).resolve().parent
FOLDER_VAR = "TUNE_P7_PROBE_CACHE"


def folder() -> Path:
    """Where kept probes are (see the module's docstring)."""
    if os.environ.get(FOLDER_VAR):
        return Path(os.environ[FOLDER_VAR])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tune_p7" / "probes"


def source_digest(package: Path = PACKAGE) -> str:
    """A digest of every Python file of ``package``: any change of the code invalidates every kept probe."""
    h = hashlib.blake2b(digest_size=16)
    for path in sorted(package.rglob("*.py")):
        h.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def key(data, params: dict, code: str | None = None) -> str:
    """The probe's key: ``params`` (JSON-able), the code (``source_digest()``), torch's and numpy's versions and the
    machine (the last digits of a sum may differ elsewhere), the data's source (the probe names it) and every array
    of its splits (dtype, shape and bytes)."""
    h = hashlib.blake2b(digest_size=20)
    h.update(json.dumps({"params": params, "code": code or source_digest(), "torch": version("torch"),
                         "numpy": np.__version__, "machine": platform.machine(), "source": data.source},
                        sort_keys=True).encode())
    for split in (data.train, data.val, data.ood):
        for a in (None, None, None) if split is None else (split.chunks, split.offsets, split.fixed_windows):
            h.update(b"-" if a is None else f"{a.dtype.str}{a.shape}".encode())
            if a is not None:
                h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def _is_probe(kept) -> bool:
    return isinstance(kept, dict) and isinstance(kept.get("splits"), dict) and "val" in kept["splits"]


def cached(data, params: dict, compute: Callable[[], dict]) -> dict:
    """The kept probe of ``data`` with ``params``, else ``compute()``'s, kept (as JSON: what a reader gets either
    way)."""
    try:
        path = folder() / f"{key(data, params)}.json"
    except (OSError, RuntimeError, PackageNotFoundError):  # no home folder, unreadable source, torch unlisted
        return json.loads(json.dumps(compute()))
    try:
        kept = json.loads(path.read_text())
        if _is_probe(kept):
            return kept
    except (OSError, ValueError):
        pass
    text, tmp = json.dumps(compute()), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)  # whole or not at all, for a search reading it meanwhile
    except OSError:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
    return json.loads(text)
