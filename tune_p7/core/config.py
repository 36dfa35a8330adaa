"""One typed config for a P7 trial. Defaults are the original's (shared/seed/FACTS.md)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from tune_p7.errors import InputError


def _rng(lo=None, hi=None, lo_open=False, choices=None):
    return {"lo": lo, "hi": hi, "lo_open": lo_open, "choices": choices}


@dataclass(frozen=True)
class P7Config:
    # model
    arch: str = field(default="transformer", metadata=_rng(choices=("transformer", "lstm")))
    d_model: int = field(default=512, metadata=_rng(1))
    n_layers: int = field(default=4, metadata=_rng(1))  # transformer encoder layers
    lstm_layers: int = field(default=2, metadata=_rng(1))
    n_heads: int = field(default=8, metadata=_rng(1))
    d_ff: int = field(default=2048, metadata=_rng(1))
    dropout: float = field(default=0.1, metadata=_rng(0.0, 0.9))
    context_length: int = field(default=5, metadata=_rng(2, 64))
    # semantic anchoring: lam = lambda_min + (lambda_max - lambda_min) * sigmoid(logit)
    lambda_init: float = field(default=0.8, metadata=_rng(0.0, 1.0))
    lambda_min: float = field(default=0.6, metadata=_rng(0.0, 1.0))
    lambda_max: float = field(default=0.9, metadata=_rng(0.0, 1.0))
    # losses
    temperature: float = field(default=0.07, metadata=_rng(0.0, 10.0, lo_open=True))
    margin: float = field(default=0.07, metadata=_rng(0.0, 2.0))
    w_rank: float = field(default=1.0, metadata=_rng(0.0))
    w_margin: float = field(default=0.5, metadata=_rng(0.0))
    w_teacher: float = field(default=0.2, metadata=_rng(0.0))
    teacher_floor: float = field(default=0.20, metadata=_rng(-1.0, 1.0))
    warmup_epochs: int = field(default=2, metadata=_rng(0))
    gate_threshold: float = field(default=0.03, metadata=_rng(-2.0, 2.0))
    gate_weak_weight: float = field(default=0.25, metadata=_rng(0.0, 1.0))
    hard_negatives: int = field(default=4, metadata=_rng(0, 256))
    # optimisation
    lr: float = field(default=5e-4, metadata=_rng(0.0, lo_open=True))
    weight_decay: float = field(default=1e-4, metadata=_rng(0.0))
    grad_clip: float = field(default=1.0, metadata=_rng(0.0, lo_open=True))
    batch_size: int = field(default=64, metadata=_rng(2))
    epochs: int = field(default=10, metadata=_rng(1))
    seed: int = field(default=0, metadata=_rng(0))
    # execution
    threads: int = field(default=0, metadata=_rng(0))  # 0: all CPUs this process may use
    device: str = field(default="cpu", metadata=_rng(choices=("cpu", "cuda", "mps")))
    precision: str = field(default="auto", metadata=_rng(choices=("auto", "bf16", "fp32")))
    eval_batch_size: int = field(default=1024, metadata=_rng(1))
    train_eval_windows: int = field(default=4096, metadata=_rng(1))  # train windows for train_margin

    def __post_init__(self):
        for _keys, rule in RULES:
            rule(self)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "config") -> "P7Config":
        """Build a config from plain values; unknown keys, wrong types and out-of-range values raise
        InputError naming ``source`` and the key."""
        known = {f.name: f for f in fields(cls)}
        kwargs = {}
        for key, value in values.items():
            if key not in known:
                raise InputError(source, f"unknown key '{key}' (known: {', '.join(known)})")
            kwargs[key] = check_value(known[key], value, source)
        try:
            return cls(**kwargs)
        except InputError as err:
            raise InputError(source, err.problem) from None

    def replace(self, **changes) -> "P7Config":
        return P7Config.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Adam moves the logit by about lr per step whatever the gradient's size, so a run moves it by O(1) units, and λ by
# about dλ/dlogit = (max - min)·p(1 - p) per unit, p = (init - min) / (max - min). From p = 0.05 one unit moves λ
# by 3-8% of its range; from a bound (Anchor clamps p to 1e-4) by 0.02%: λ never moves.
LAMBDA_EDGE = 0.05


def _lambda_rule(c: "P7Config") -> None:
    lo, hi, init = c.lambda_min, c.lambda_max, c.lambda_init
    if not lo <= init <= hi:
        raise InputError("config", f"key 'lambda_init': lambda_init {init} is outside [lambda_min, lambda_max] = "
                                   f"[{lo}, {hi}]")
    p = (init - lo) / (hi - lo) if hi > lo else 0.5
    if not LAMBDA_EDGE <= p <= 1 - LAMBDA_EDGE:
        slope = (hi - lo) * max(p * (1 - p), 1e-4)
        raise InputError("config", f"key 'lambda_init': {init} is within {LAMBDA_EDGE:.0%} of an end of [lambda_min, "
                                   f"lambda_max] = [{lo}, {hi}], where dλ/dlogit = {slope:.1g} and λ cannot move in "
                                   "a run: widen the range past it")


def _heads_rule(c: "P7Config") -> None:
    if c.arch == "transformer" and c.d_model % c.n_heads:
        raise InputError("config", f"key 'n_heads': d_model {c.d_model} is not divisible by n_heads {c.n_heads}")


# The rules that tie keys together, with the keys each reads: a search space checks every combination of these
# keys' values that can occur (tune_p7.space.file), every other key one value at a time.
RULES = ((("lambda_init", "lambda_min", "lambda_max"), _lambda_rule), (("arch", "d_model", "n_heads"), _heads_rule))


def check_value(f: dataclasses.Field, value: Any, source: str) -> Any:
    """Type- and range-check one value of field ``f``; returns it converted to the field's type."""
    kind = type(f.default)
    key = f.name
    if kind is bool or isinstance(value, bool):
        raise InputError(source, f"key '{key}': expected {kind.__name__}, got {value!r}")
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise InputError(source, f"key '{key}': expected an integer, got {value!r}")
    elif kind is float:
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError(source, f"key '{key}': expected a finite number, got {value!r}")
        value = float(value)
    elif kind is str and not isinstance(value, str):
        raise InputError(source, f"key '{key}': expected a string, got {value!r}")
    m = f.metadata
    if m["choices"] is not None and value not in m["choices"]:
        raise InputError(source, f"key '{key}': {value!r} is not one of {', '.join(m['choices'])}")
    lo, hi = m["lo"], m["hi"]
    if lo is not None and (value < lo or (m["lo_open"] and value == lo)):
        raise InputError(source, f"key '{key}': {value!r} is out of range (must be {'>' if m['lo_open'] else '>='} {lo})")
    if hi is not None and value > hi:
        raise InputError(source, f"key '{key}': {value!r} is out of range (must be <= {hi})")
    return value
