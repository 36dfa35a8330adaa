"""One value, sampler or settings section of a search-space file, validated (used by tune_p7.space.file and
the section modules)."""
from __future__ import annotations

from dataclasses import fields

from tune_p7.core.config import P7Config, check_value
from tune_p7.errors import InputError

SAMPLERS = ("grid", "choice", "uniform", "loguniform")


def section(src, raw, name, cls):
    values = raw.get(name) or {}
    if not isinstance(values, dict):
        raise InputError(src, f"'{name}' must be a mapping")
    known = {f.name: f for f in fields(cls)}
    out = {}
    for key, value in values.items():
        if key not in known:
            raise InputError(src, f"unknown key '{name}.{key}' (known: {', '.join(known)})")
        optional = known[key].default is None  # an optional number: null turns it off
        kind = float if optional else type(known[key].default)
        ok = isinstance(value, kind) or (kind is float and isinstance(value, int)) or (optional and value is None)
        if not ok or isinstance(value, bool):
            expected = "a number or null" if optional else kind.__name__
            raise InputError(src, f"key '{name}.{key}': expected {expected}, got {value!r}")
        out[key] = value
    return cls(**out)


def param(src, key, value, section="params", samplers=SAMPLERS):
    f = {f.name: f for f in fields(P7Config)}.get(key)
    if f is None:
        raise InputError(src, f"unknown key '{section}.{key}' (not a config key)")
    if not isinstance(value, dict):
        return check_value(f, value, src)
    if len(value) != 1 or next(iter(value)) not in samplers:
        raise InputError(src, f"key '{section}.{key}': a sampler is one of {{{', '.join(samplers)}: ...}}, "
                              f"got {value!r}")
    (kind, arg), = value.items()
    if not isinstance(arg, list) or not arg:
        raise InputError(src, f"key '{section}.{key}': {kind} needs a non-empty list, got {arg!r}")
    checked = [check_value(f, v, f"{src}: {section}.{key}") for v in arg]
    if kind in ("uniform", "loguniform"):
        if len(arg) != 2 or not isinstance(f.default, float) or not checked[0] < checked[1]:
            raise InputError(src, f"key '{section}.{key}': {kind} needs [low, high] with low < high on a float key")
        if kind == "loguniform" and checked[0] <= 0:
            raise InputError(src, f"key '{section}.{key}': loguniform needs low > 0")
    return {kind: checked}
