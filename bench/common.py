"""Shared helpers of the benchmarks: synthetic data in memory, alternated timing, FLOP counts, result files.

Every benchmark compares its variants inside one run and alternates them (A B C A B C ...), because these
machines are shared: a figure is the median over rounds, and a ratio is the median of the per-round ratios
(each round's variants ran within seconds of each other, under the same background load).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tune_p7.core.config import P7Config  # noqa: E402
from tune_p7.data.loading import P7Data, Split, _split_from_store  # noqa: E402
from tune_p7.data.synth import generate  # noqa: E402

RESULTS = ROOT / "bench" / "results"  # the committed results of full runs
QUICK_RESULTS = RESULTS / "quick"      # --quick runs: untracked (.gitignore), never over the committed ones


# ------------------------------------------------------------------------------------------------ arguments
def parser(description: str, step: bool = False) -> argparse.ArgumentParser:
    """--quick; with ``step``, also --threads and --batch of a training-step benchmark."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a smaller run (< 1 minute)")
    if step:
        p.add_argument("--threads", type=int, default=2, help="torch threads")
        p.add_argument("--batch", type=int, default=64, help="training batch size")
    return p


# ------------------------------------------------------------------------------------------------ data
def synth_split(name: str, articles: int, chunks_per_article: int, dim: int = 768, signal: float = 1.0,
                seed: int = 0, dtype=np.float32, block: int = 500) -> Split:
    """A synthetic split built in memory (tune_p7.data.synth.generate, in blocks of articles to bound memory)."""
    vecs, arts = [], []
    for i in range(0, articles, block):
        n = min(block, articles - i)
        art, _, vec = generate(n, chunks_per_article, dim, signal, seed=seed * 100_003 + i)
        vecs.append(vec.astype(dtype))
        arts.append(art + i)
    return _split_from_store(f"synthetic:{name}", name, np.concatenate(arts), np.concatenate(vecs))


def synth_data(train_windows: int, val_windows: int, context: int = 5, chunks_per_article: int = 24,
               dim: int = 768, signal: float = 1.0, dtype=np.float32) -> P7Data:
    """Train/val splits with about the given numbers of windows at context length ``context``."""
    per = chunks_per_article - context
    tr = synth_split("train", max(1, -(-train_windows // per)), chunks_per_article, dim, signal, 1, dtype)
    va = synth_split("val", max(1, -(-val_windows // per)), chunks_per_article, dim, signal, 2, dtype)
    return P7Data("synthetic", tr, va)


def data_bytes(data: P7Data) -> int:
    total = 0
    for s in (data.train, data.val, data.ood):
        if s is not None:
            total += s.chunks.nbytes + s.offsets.nbytes + (0 if s.fixed_windows is None else s.fixed_windows.nbytes)
    return total


# ------------------------------------------------------------------------------------------------ timing
def alternate(variants: dict[str, Callable[[], float]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Call every variant once per round, in turn (A B C A B C ...); each call returns a rate (higher is better).

    Returns the per-round rates of each variant. The first ``warmup`` rounds are run and dropped."""
    out: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(warmup + rounds):
        for name, fn in variants.items():
            v = fn()
            if r >= warmup:
                out[name].append(v)
    return out


def median(xs) -> float:
    xs = [x for x in xs if x == x]
    return float(statistics.median(xs)) if xs else float("nan")


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a[i] / b[i] (both measured in the same round)."""
    return median([x / y for x, y in zip(a, b) if y > 0])


def spread(xs, fmt: str = ".0f") -> str:
    """min..max of a list of measurements."""
    xs = sorted(xs)
    return f"{xs[0]:{fmt}}..{xs[-1]:{fmt}}" if xs else "-"


def timed(fn: Callable[[], object], n: int) -> float:
    """Seconds for n calls of fn."""
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - t


# ------------------------------------------------------------------------------------------------ matmul peak
def matmul_gflops(n: int = 2048, dtype=torch.float32, reps: int = 3) -> float:
    """GFLOP/s of an n x n x n matmul (reps calls after one warm-up call, preallocated output)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    c = torch.empty(n, n, dtype=dtype)
    torch.mm(a, b, out=c)
    dt = timed(lambda: torch.mm(a, b, out=c), reps)
    return 2 * n ** 3 * reps / dt / 1e9


def cpu_info() -> dict:
    flags = ""
    model = platform.processor()
    try:
        text = open("/proc/cpuinfo").read()
        flags = next((ln.split(":", 1)[1] for ln in text.splitlines() if ln.startswith("flags")), "")
        model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), model)
    except OSError:
        pass
    fl = set(flags.split())
    return {"model": model, "cpus": len(os.sched_getaffinity(0)), "torch": torch.__version__,
            "amx_bf16": "amx_bf16" in fl, "avx512_bf16": "avx512_bf16" in fl, "avx512f": "avx512f" in fl,
            "isa": torch.backends.cpu.get_cpu_capability(), "loadavg": os.getloadavg()}


# ------------------------------------------------------------------------------------------------ FLOPs
def forward_macs(cfg: P7Config, dim: int, last_only: bool = True) -> dict[str, float]:
    """Multiply-accumulates of one sequence's forward pass, by part. ``last_only``: the last encoder layer runs
    its query, output projection and feed-forward block for the last position only (what tune_p7.core.model does)."""
    k, e, f = cfg.context_length, cfg.d_model, cfg.d_ff
    if cfg.arch == "lstm":
        h = cfg.d_model
        rec = sum(4 * h * ((dim if i == 0 else h) + h) for i in range(cfg.lstm_layers)) * k
        return {"input": 0.0, "weights": float(rec + e * e + e * dim), "attention": 0.0}
    full = k * (4 * e * e + 2 * e * f)
    attn_full = 2 * k * k * e
    if last_only:
        last = k * 2 * e * e + (2 * e * e + 2 * e * f)
        attn_last = 2 * k * e
    else:
        last, attn_last = full, attn_full
    layers = (cfg.n_layers - 1) * full + last
    return {"input": float(k * dim * e), "weights": float(layers + e * e + e * dim),
            "attention": float((cfg.n_layers - 1) * attn_full + attn_last)}


def train_flops_per_seq(cfg: P7Config, dim: int, batch: int, last_only: bool = True) -> float:
    """Training FLOPs of one sequence, counted analytically: forward + backward of every matmul.

    A weight matmul costs 3x its forward (forward, grad of the input, grad of the weight), the input projection 2x
    (no gradient flows into the data), the attention products 3x, the bank matmul (B, D) x (D, C) 2x (the bank is
    data). 2 FLOPs per multiply-accumulate. Elementwise work (norms, softmax, dropout, optimizer) is not counted.
    """
    m = forward_macs(cfg, dim, last_only)
    bank = batch * (2 + cfg.hard_negatives) * dim
    return 2.0 * (2 * m["input"] + 3 * m["weights"] + 3 * m["attention"] + 2 * bank)


# ------------------------------------------------------------------------------------------------ results
def results_dir(quick: bool) -> Path:
    """Where a run's JSON goes: bench/results/ for a full run, bench/results/quick/ (untracked) for --quick, so a
    quick check never overwrites the committed full-run figures."""
    return QUICK_RESULTS if quick else RESULTS


def write_result(name: str, payload: dict, *, quick: bool) -> Path:
    """Write ``<results_dir(quick)>/<name>.json``: the payload with the time and this machine's CPU facts."""
    folder = results_dir(quick)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    payload = {"bench": name, "time": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu": cpu_info(), **payload}
    path.write_text(dump_json(payload))
    return path


def dump_json(obj) -> str:
    """Strict JSON (no Infinity / NaN, which most JSON readers refuse): a non-finite float is written as null."""
    return json.dumps(_finite_or_null(obj), indent=2, default=_json_default, allow_nan=False) + "\n"


def _finite_or_null(o):
    if isinstance(o, dict):
        return {k: _finite_or_null(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite_or_null(v) for v in o]
    if isinstance(o, (float, np.floating)) and not np.isfinite(o):
        return None
    return o


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


def table(rows: list[dict], cols: list[str] | None = None) -> str:
    """A plain-text table of rows (dicts); floats shown with 3 significant digits (or as integers when large)."""
    if not rows:
        return "(no rows)"
    cols = cols or list(rows[0])

    def fmt(v):
        if isinstance(v, float):
            if v != v:
                return "nan"
            return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths]), *map(line, cells)])


def step_loop(step, st, batch: int) -> Callable[[int], float]:
    """``run(n)``: n calls of a TrainStep on consecutive batches of one seeded permutation of ``st`` (wrapping
    around), returning the seconds they took."""
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(st), generator=gen)
    at = 0

    def run(n: int) -> float:
        nonlocal at
        t = time.perf_counter()
        for _ in range(n):
            if (at + 1) * batch > len(st):
                at = 0
            step(perm[at * batch:(at + 1) * batch], gen, step.cfg.w_teacher)
            at += 1
        return time.perf_counter() - t
    return run
