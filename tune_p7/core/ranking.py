"""What the search, the summary and the held-out evaluation share: the search record's file name, the one ranking
key, the varied config columns and the number format of the tables.

The ranking key orders trials (summary) and checkpoints (evaluate's choice) the same way, on val metrics only:
deployment check passed first, then the verdict (PASS > MARGINAL > FAIL), then the higher val margin.
"""
from __future__ import annotations

import math
from numbers import Integral, Real

import pandas as pd

VERDICT_ORDER = {"PASS": 0, "MARGINAL": 1, "FAIL": 2}
RANKING = ("whether the trial ran without error (errored trials last), then the deployment check (R@5 >= "
           "DIRECT + 0.10 and MRR@10 >= DIRECT + 0.05; passed first), then the verdict (PASS > MARGINAL > FAIL), "
           "then the val margin")


def ranking_key(deploy_ok, verdict, margin, errored: bool = False) -> tuple:
    """Sort key, smallest first: (errored, deployment check failed, verdict order, -margin); a NaN margin sorts
    last. An errored trial (its loss turned NaN) ranks below every other whatever its earlier epochs reached."""
    m = float(margin) if isinstance(margin, Real) and math.isfinite(margin) else -math.inf
    return (bool(errored), not bool(deploy_ok), VERDICT_ORDER.get(verdict, len(VERDICT_ORDER)), -m)


def ranked_index(df: pd.DataFrame, deploy: str = "deploy_ok", verdict: str = "verdict",
                 margin: str = "margin", status: str = "status") -> list:
    """The index of ``df`` in ranking order (stable: ties keep their order), from the named columns (no
    ``status`` column: nothing errored)."""
    errored = df[status] == "errored" if status in df else pd.Series(False, index=df.index)
    keys = {i: ranking_key(d, v, m, e)
            for i, d, v, m, e in zip(df.index, df[deploy], df[verdict], df[margin], errored)}
    return sorted(df.index, key=keys.__getitem__)


def varied(df: pd.DataFrame) -> list[str]:
    """The ``config/<key>`` columns of ``df`` that take more than one value (the seed is not a hyperparameter)."""
    cols = [c for c in df.columns if c.startswith("config/") and c != "config/seed"]
    return [c for c in cols if df[c].astype(str).nunique() > 1]


def fmt(v, sampler: str | None = None) -> str:
    """A table cell: loguniform values in scientific notation, grid and choice values as given (shortest form),
    other floats to three significant digits; integers and text as they are, booleans as yes/no, NaN as nan,
    None as empty."""
    if v is None:
        return ""
    if isinstance(v, bool) or type(v).__name__ == "bool_":
        return "yes" if v else "no"
    if isinstance(v, Integral):
        return str(int(v))
    if not isinstance(v, Real):
        return str(v)
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if sampler == "loguniform":
        return f"{v:.2e}"
    if sampler in ("grid", "choice"):
        return f"{v:g}"
    a = abs(v)
    if a == 0:
        return "0"
    if a < 1e-4 or a >= 1e5:
        return f"{v:.2e}"
    if a >= 1000:
        return f"{v:.0f}"
    return f"{v:#.3g}".rstrip(".")
