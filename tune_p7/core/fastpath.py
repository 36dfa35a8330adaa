"""The measured speed tricks of the model, the loop and the evaluation, each computing what it replaces.

Each has an equivalence test in tests/core/test_fastpath.py; the measurements behind them are in bench/README.md.
"""
from __future__ import annotations

import ctypes
import functools
import inspect
import time

import torch
from torch import nn

from tune_p7.core.config import P7Config


class Dropout16(nn.Dropout):
    """nn.Dropout (zero each element with probability p, scale the rest by 1 / (1 - p)), the Bernoulli(1 - p) mask
    (to 2^-16) cut from 16 random bits per element: torch's CPU generator is sequential, so fewer draws pay."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        n = x.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-2**63, None)  # full range
        keep = bits.view(torch.int16)[:n].view(x.shape) >= round(self.p * 65536) - 32768
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))


def last_position(layer: nn.TransformerEncoderLayer, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)[:, -1]`` for a pre-norm (norm_first) encoder layer without masks: (B, K, E) -> (B, E).

    The model reads only the last position, so only its query, attention output and feed-forward block are
    computed (keys and values still come from every position).
    """
    xn = layer.norm1(x)
    x = x[:, -1] + layer.dropout1(layer.self_attn(xn[:, -1:], xn, xn, need_weights=False)[0][:, 0])
    return x + layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm2(x))))))


# torch's own functions under the wrappers that import torch._dynamo at their first call: _disable_dynamo (so that a
# compiling tracer skips the method) and, around step, _use_grad_for_differentiable (grad mode and graph breaks),
# itself wrapped in a profiling hook once any optimizer of its class exists: inspect.unwrap goes through all of them
_OPT = torch.optim.Optimizer
_ADD_PARAM_GROUP, _ZERO_GRAD, _STATE_DICT, _LOAD_STATE_DICT, _ADAMW_STEP = (inspect.unwrap(m) for m in (
    _OPT.add_param_group, _OPT.zero_grad, _OPT.state_dict, _OPT.load_state_dict, torch.optim.AdamW.step))


class AdamW(torch.optim.AdamW):
    """torch.optim.AdamW, the same update and state dict, without importing torch._dynamo (1.2-1.9 CPU-s in every
    trial worker; nothing here compiles): it calls torch's unwrapped methods, and steps under no_grad as torch's
    wrapper does when ``differentiable`` is False (the only setting it takes)."""

    def __init__(self, params, **kwargs):
        if kwargs.get("differentiable"):
            raise ValueError("fastpath.AdamW steps under no_grad: differentiable=True needs torch.optim.AdamW")
        super().__init__(params, **kwargs)

    def add_param_group(self, param_group: dict) -> None:
        _ADD_PARAM_GROUP(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        _ZERO_GRAD(self, set_to_none)

    def state_dict(self) -> dict:
        return _STATE_DICT(self)

    def load_state_dict(self, state_dict: dict) -> None:
        _LOAD_STATE_DICT(self, state_dict)

    @torch.no_grad()
    def step(self, closure=None):
        return _ADAMW_STEP(self, closure)


def clip_and_step(opt: torch.optim.Optimizer, params: list[torch.Tensor], max_norm: float) -> None:
    """``clip_grad_norm_(params, max_norm)`` then ``opt.step()``. Under fused AdamW the clipping factor
    min(1, max_norm / (norm + 1e-6)) goes in as its ``grad_scale`` divisor (meant for AMP unscaling), which saves
    clip_grad_norm_'s separate read-scale-write pass over every gradient."""
    if opt.defaults.get("fused"):
        norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        opt.grad_scale = ((norm + 1e-6) / max_norm).clamp_min(1.0)
    else:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    opt.step()


def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc
    except (AttributeError, OSError):
        return None


_MALLOC_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Give the C heap's free pages back to the OS (glibc malloc_trim; a no-op elsewhere): glibc keeps an
    evaluation's freed temporaries in its arenas, resident for the whole trial. A few ms; called after each
    evaluation."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


# Queries per retrieval matmul: a (128, bank) score block stays in cache, and no large block stays with the allocator.
RETRIEVAL_BLOCK = 128
BF16_MIN_SPEEDUP = 1.3


def _cpu_flags() -> set[str]:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return set()
    return set(next((ln.split(":", 1)[1] for ln in text.splitlines() if ln.startswith("flags")), "").split())


def bf16_matmul_speedup(reps: int = 5) -> float:
    """fp32 / bf16 time of a 1024^3 matmul with torch's current threads: the fastest of ``reps`` alternated calls
    each (~0.3 s in all; smaller, model-shaped matmuls give noisier ratios on a loaded machine)."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    best = {}
    for _ in range(reps + 1):  # the first round warms up
        for dt in (torch.float32, torch.bfloat16):
            x, y = a.to(dt), b.to(dt)
            t = time.perf_counter()
            x @ y
            best.setdefault(dt, []).append(time.perf_counter() - t)
    return min(best[torch.float32][1:]) / min(best[torch.bfloat16][1:])


@functools.cache
def cpu_bf16_is_fast() -> bool:
    """bf16 matmuls are clearly faster than fp32 on this CPU: it has AMX-BF16 or AVX512-BF16 and a bf16 matmul,
    timed once per process, runs >= BF16_MIN_SPEEDUP x fp32 (the flags alone do not tell: some CPUs with
    avx512_bf16 run bf16 matmuls slower than fp32). fit records the choice in every epoch's metrics (``bf16``)."""
    return bool(_cpu_flags() & {"amx_bf16", "avx512_bf16"}) and bf16_matmul_speedup() >= BF16_MIN_SPEEDUP


def use_bf16(cfg: P7Config) -> bool:
    """bf16 autocast for this config: precision bf16, or auto on a CPU where bf16 is fast."""
    if cfg.precision == "auto":
        return cfg.device == "cpu" and cpu_bf16_is_fast()
    return cfg.precision == "bf16"
