"""What matters: the importance of each varied hyperparameter for the final val margin and R@5.

Reads the summary's per-trial table (``summary.parquet``: ``config/<key>`` columns, final metrics, ``status``),
and measures how much of the variance between trials each varied hyperparameter explains on its own (a one-way
ANOVA's omega squared, numpy only; Optuna's fANOVA or PED-ANOVA on request). Writes ``importance.json``, ``importance.png`` and
``parallel_coordinates.png`` into the experiment folder and returns the "What matters" section of summary.md.
"""
from __future__ import annotations

import importlib.util
import io
import json
import math
import warnings
from typing import Any

import pandas as pd

from tune_p7 import storage
from tune_p7.errors import InputError
from tune_p7.reporting import varied

TARGETS = {"margin": "final val margin", "r_at_5": "val R@5"}
FINISHED = ("completed", "asha_stopped", "gate_stopped")
STOPPED = ("asha_stopped", "gate_stopped")
STOPPED_RULE = ("Stopped trials (ASHA or a gate) count with their last reported val metrics, at the epoch they "
                "stopped: the value the scheduler judged them on")
# The default, "anova", needs only numpy: `pip install -r requirements.txt` must give a summary with its importance
# section, and Optuna's fANOVA needs scikit-learn (an extra). On synthetic searches of 10-40 trials where only lr
# matters (lr a two-value grid or a log range, a no-effect uniform key beside it; 100-300 replications each) it
# ranked a no-effect key first in at most 1% of them, fANOVA in at most 3%, PED-ANOVA in 24-44% when lr was a
# grid (its top quantile is a few trials of one plateau, told apart by noise). PED-ANOVA compares the top-quantile
# trials with all of them and its docstring asks for at least 5 trials in the top; with its default quantile 0.1
# that needs 50 trials, so the quantile grows to MIN_TOP / n on smaller searches. Below MIN_TRIALS the groups of
# a one-way ANOVA hold 2-3 trials and a random forest (fANOVA) has too few points to split.
EVALUATORS = ("anova", "fanova", "ped_anova")
MIN_TOP = 5
MIN_TRIALS = 10
DEFAULT_QUANTILE = 0.1
# Without a recorded sampler, a numeric key is a range when most trials drew a value of their own (random draws)
INFER_MIN_DISTINCT = 6
MAX_PX = 2400
DPI = 90


def _plain(v: Any) -> Any:
    """A numpy scalar as the Python value Optuna's distributions accept."""
    return v.item() if hasattr(v, "item") else v


def _numeric(values: list) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _levels(values: list) -> list:
    """The distinct values, numbers in numeric order before the rest in text order."""
    return sorted(set(values), key=lambda v: (0, v, "") if _numeric([v]) else (1, 0, str(v)))


def varied_keys(df: pd.DataFrame) -> list[str]:
    """The config keys (without ``config/``) that take more than one value in ``df``."""
    return [c.removeprefix("config/") for c in varied(df)]


def space_samplers(record: dict) -> dict[str, tuple[str, list | None]]:
    """{key: (sampler, its values or [low, high])}: the search record's ``samplers``, and for the other keys the
    space file's params (keys of explicit ``runs`` are categorical); keys in neither are left out."""
    from tune_p7.space import load_space

    space = None
    if record.get("space"):
        try:
            space = load_space(record["space"])
        except InputError:  # the space file moved or changed since the search: infer from the values instead
            space = None
    params = {k: next(iter(v.items())) for k, v in space.params.items() if isinstance(v, dict)} if space else {}
    if space:
        params.update({k: ("run", None) for run in space.runs for k in run})
    recorded = {k: (kind, params.get(k, (kind, None))[1]) for k, kind in (record.get("samplers") or {}).items()}
    return {**params, **recorded}


def sampling(values: list, kind: str | None, arg: list | None) -> tuple[str, str, dict]:
    """(how the key was sampled, the Optuna distribution's class name, its arguments): grid/choice/run keys
    categorical over the values seen, uniform/loguniform a float range (the space's bounds, widened to the values
    seen); no sampler known: a range when numeric with many distinct values (log when it spans two decades or
    more), else categorical. Plain data, so that a summary that computes no importance never imports Optuna."""
    distinct = _levels(values)
    if kind is None and _numeric(values) and len(distinct) >= max(INFER_MIN_DISTINCT, len(values) / 2):
        low, high = min(values), max(values)
        log = low > 0 and high / low >= 100
        label = "inferred log range" if log else "inferred range"
        if all(isinstance(v, int) for v in values):
            return label, "IntDistribution", {"low": low, "high": high, "log": log}
        return label, "FloatDistribution", {"low": float(low), "high": float(high), "log": log}
    if kind in ("uniform", "loguniform"):
        low, high = (arg if arg else (min(values), max(values)))
        low, high = float(min(low, *values)), float(max(high, *values))
        return kind, "FloatDistribution", {"low": low, "high": high, "log": kind == "loguniform"}
    return kind or "inferred categorical", "CategoricalDistribution", {"choices": distinct}


def optuna_distribution(spec: tuple[str, str, dict]):
    """The Optuna distribution a ``sampling`` names."""
    import optuna.distributions

    _, cls, kwargs = spec
    return getattr(optuna.distributions, cls)(**kwargs)


def samplings(df: pd.DataFrame, record: dict) -> dict[str, tuple[str, str, dict]]:
    """{varied key: ``sampling`` of its values} over the trials in ``df``."""
    samplers = space_samplers(record)
    return {k: sampling([_plain(v) for v in df[f"config/{k}"]], *samplers.get(k, (None, None)))
            for k in varied_keys(df)}


def _is_range(label: str) -> bool:
    return label in ("uniform", "loguniform") or label.endswith("range")


MAX_BINS = 5


def _groups(values: list, categorical: bool):
    """Group labels of one key's values: its levels, or for a range equal-count bins of its ranks (about sqrt(n)
    of them, 2-5), so that log and linear ranges bin alike."""
    import numpy as np

    if categorical:
        levels = {v: i for i, v in enumerate(_levels(values))}
        return np.array([levels[v] for v in values])
    n = len(values)
    k = int(min(MAX_BINS, max(2, round(n ** 0.5))))
    ranks = np.argsort(np.argsort(np.asarray(values, dtype=float), kind="stable"), kind="stable")
    return ranks * k // n


def omega_squared(y, groups) -> float:
    """One-way ANOVA's omega squared: the share of the variance of ``y`` its groups explain, less what as many
    groups of pure noise would explain (so a no-effect key scores about 0, clipped there)."""
    import numpy as np

    y = np.asarray(y, dtype=float)
    labels = np.unique(groups)
    n, k = len(y), len(labels)
    ss_total = float(((y - y.mean()) ** 2).sum())
    if k < 2 or n - k < 1 or ss_total == 0:
        return 0.0
    ss_between = sum((groups == g).sum() * (y[groups == g].mean() - y.mean()) ** 2 for g in labels)
    ms_within = (ss_total - ss_between) / (n - k)
    return max(0.0, float((ss_between - (k - 1) * ms_within) / (ss_total + ms_within)))


def anova(values: pd.Series, params: dict[str, list], specs: dict) -> dict[str, float]:
    """{key: omega squared} rescaled to sum to 1 (all 0 when no key explains more than chance), largest first."""
    raw = {k: omega_squared(values, _groups(v, specs[k][1] == "CategoricalDistribution")) for k, v in params.items()}
    total = sum(raw.values())
    return dict(sorted(((k, v / total if total else 0.0) for k, v in raw.items()), key=lambda kv: -kv[1]))


def _evaluator(name: str, n: int):
    """(the evaluator's name in the summary, what its importance means, Optuna's evaluator or None for anova)."""
    if name == "anova":
        return ("one-way ANOVA per hyperparameter, omega squared; ranges in equal-count bins",
                "the share of the variance between trials each hyperparameter explains on its own, less what "
                "chance explains", None)
    if name == "fanova" and importlib.util.find_spec("sklearn") is None:
        raise InputError("importance", "evaluator fanova needs scikit-learn: pip install -r requirements-search.txt")
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    if name == "fanova":
        return ("Optuna's fANOVA, random forest seed 0", "the share of the variance between trials each "
                "hyperparameter explains on its own", FanovaImportanceEvaluator(seed=0))
    q = max(DEFAULT_QUANTILE, MIN_TOP / n)
    return (f"Optuna's PED-ANOVA, the top {q:.0%} of the trials against all of them", "how far each "
            "hyperparameter's values in the top trials differ from its values in all of them",
            PedAnovaImportanceEvaluator(target_quantile=q))


def importances(df: pd.DataFrame, record: dict | None = None, evaluator: str = EVALUATORS[0]) -> dict:
    """The importance report of a summary table: per target {param: share of importance} or why it is skipped."""
    if evaluator not in EVALUATORS:
        raise InputError("importance", f"unknown evaluator {evaluator!r} (known: {', '.join(EVALUATORS)})")
    status = df["status"] if "status" in df else pd.Series("completed", index=df.index)
    finished = df[status.isin(FINISHED)]
    left_out = {s: int(n) for s, n in status[~status.isin(FINISHED)].value_counts().items()}
    keys = varied_keys(finished)
    specs = samplings(finished, record or {})
    out = {"importance": {}, "n_trials": {}, "left_out": left_out, "nan": {}, "skipped": {},
           "meaning": None, "stopped_trials": STOPPED_RULE, "n_stopped": int(status.isin(STOPPED).sum()),
           "distributions": {k: label for k, (label, _, _) in specs.items()}, "evaluator": None}
    for target in TARGETS:
        values = pd.to_numeric(finished[target], errors="coerce") if target in finished else \
            pd.Series(math.nan, index=finished.index)
        used = finished[values.map(math.isfinite)]
        out["nan"][target] = len(finished) - len(used)
        out["n_trials"][target] = len(used)
        used_keys = [k for k in keys if used[f"config/{k}"].astype(str).nunique() > 1]
        reason = _too_few(len(used), used_keys, values[used.index])
        if reason:
            out["skipped"][target] = reason
            continue
        out["evaluator"], out["meaning"], ev = _evaluator(evaluator, len(used))
        params = {k: [_plain(v) for v in used[f"config/{k}"]] for k in used_keys}
        if ev is None:
            result = anova(values[used.index], params, specs)
        else:
            result = _optuna_importances(ev, values[used.index], params, specs)
        out["importance"][target] = {k: round(float(v), 4) for k, v in result.items()}
    return out


def _optuna_importances(ev, values: pd.Series, params: dict[str, list], specs: dict) -> dict:
    import optuna  # only here: its import takes 1-2 s

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    made = {k: optuna_distribution(specs[k]) for k in params}
    study.add_trials([optuna.trial.create_trial(
        params={k: v[i] for k, v in params.items()}, distributions=made, value=float(y))
        for i, y in enumerate(values)])
    with warnings.catch_warnings():  # small-sample notes; MIN_TRIALS already guards the result
        warnings.simplefilter("ignore")
        return optuna.importance.get_param_importances(study, evaluator=ev)


def _too_few(n: int, keys: list[str], values: pd.Series) -> str | None:
    if n < MIN_TRIALS:
        return (f"too few trials: {n} finished with a finite value, the importance evaluators need at least "
                f"{MIN_TRIALS}")
    if len(keys) < 2:
        return f"fewer than 2 varied hyperparameters among the finished trials ({', '.join(keys) or 'none'})"
    if values.nunique() < 2:
        return "every finished trial has the same value: nothing separates them"
    return None


def markdown(report: dict) -> list[str]:
    """The "What matters" section of summary.md."""
    md = ["## What matters", ""]
    md += [f"Importance for the {TARGETS[t]} not computed: {why}." for t, why in report["skipped"].items()]
    done = [t for t in TARGETS if t in report["importance"]]
    if not done:
        return md + [""]
    counts = ", ".join(f"{report['n_trials'][t]} trials for the {TARGETS[t]}" for t in done)
    left = [f"{n} {s}" for s, n in report["left_out"].items()]
    left += [f"{n} with NaN {t}" for t, n in report["nan"].items() if n]
    md += ["" if report["skipped"] else None,
           f"Importance of each varied hyperparameter ({report['evaluator']}), from "
           f"{counts}. {report['stopped_trials']} ({report['n_stopped']} such). "
           f"Left out: {', '.join(left) or 'none'}. Importance: {report['meaning']}, rescaled to sum to 1 "
           "for each target; they hold within this search's ranges and say nothing of the size of the effect "
           "(see the plots).", "",
           "| hyperparameter | sampled as | " + " | ".join(f"importance for {TARGETS[t]}" for t in done) + " |",
           "|---|---|" + "---|" * len(done)]
    for k in report["importance"][done[0]]:
        md.append(f"| {k} | {report['distributions'][k]} | "
                  + " | ".join(f"{report['importance'][t].get(k, math.nan):.3f}" for t in done) + " |")
    md += ["", *(f"No hyperparameter explains more of the {TARGETS[t]} than chance would (every importance 0)."
                 for t in done if not any(report["importance"][t].values()))]
    return [x for x in md if x is not None] + [""]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI)
    _plt().close(fig)
    return buf.getvalue()


def bar_plot(report: dict) -> bytes:
    """One horizontal bar panel per computed target."""
    done = [t for t in TARGETS if t in report["importance"]]
    plt = _plt()
    n = max(len(v) for v in report["importance"].values())
    fig, axes = plt.subplots(1, len(done), figsize=(5 * len(done), 1.2 + 0.35 * n), squeeze=False)
    for ax, t in zip(axes[0], done):
        imp = report["importance"][t]
        names = list(imp)[::-1]
        bars = ax.barh(names, [imp[k] for k in names], color="tab:blue")
        ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=2)
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of importance")
        ax.set_title(f"{TARGETS[t]} ({report['n_trials'][t]} trials)")
    return _png(fig)


def _axis(values: pd.Series, kind: str) -> tuple[pd.Series, list[float], list[str]]:
    """Positions in [0, 1] of one axis's values, and its ticks (positions, labels of the real values)."""
    import numpy as np

    vals = [_plain(v) for v in values]
    if not _is_range(kind) or not _numeric(vals):
        levels = _levels(vals)
        pos = {v: i / max(1, len(levels) - 1) for i, v in enumerate(levels)}
        return pd.Series([pos[v] for v in vals], index=values.index), list(pos.values()), [str(v) for v in levels]
    x = np.asarray(vals, dtype=float)
    log = "log" in kind and x.min() > 0
    f = np.log10(x) if log else x
    lo, hi = float(f.min()), float(f.max())
    span = hi - lo or 1.0
    ticks = np.linspace(lo, hi, 5) if hi > lo else np.array([lo])
    labels = [f"{10 ** t if log else t:.3g}" for t in ticks]
    return pd.Series((f - lo) / span, index=values.index), list((ticks - lo) / span), labels


def parallel_plot(df: pd.DataFrame, keys: list[str], kinds: dict[str, str]) -> bytes:
    """Parallel coordinates of the varied hyperparameters and the final val margin, one line a trial coloured by
    its margin (best drawn last, on top)."""
    plt = _plt()
    df = df.sort_values("margin")
    cols = [(k, f"config/{k}", kinds[k]) for k in keys] + [("final val margin", "margin", "range")]
    width = min(MAX_PX / DPI, max(6.0, 1.8 * len(cols)))
    fig, ax = plt.subplots(figsize=(width, 5))
    norm = plt.Normalize(df["margin"].min(), df["margin"].max())
    cmap = plt.get_cmap("viridis")
    ys = []
    for i, (_, col, kind) in enumerate(cols):
        y, ticks, labels = _axis(df[col], kind)
        ys.append(y)
        ax.axvline(i, color="black", lw=0.8)
        for t, label in zip(ticks, labels):
            ax.text(i - 0.03, t, label, ha="right", va="center", fontsize=7, zorder=3,
                    bbox=dict(facecolor="white", edgecolor="none", alpha=0.7, pad=0.5))
    alpha = max(0.25, min(0.9, 20 / len(df)))
    for j, idx in enumerate(df.index):
        ax.plot(range(len(cols)), [y[idx] for y in ys], color=cmap(norm(df["margin"].iloc[j])), lw=1, alpha=alpha)
    ax.set_xticks(range(len(cols)), [c[0] for c in cols], fontsize=8)
    ax.set_xlim(-0.4, len(cols) - 0.8)
    ax.set_ylim(-0.05, 1.05)
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="final val margin")
    ax.set_title(f"{len(df)} finished trials")
    return _png(fig)


def section(exp: str, df: pd.DataFrame, record: dict | None = None,
            evaluator: str = EVALUATORS[0]) -> tuple[list[str], dict[str, bytes]]:
    """Write importance.json into experiment ``exp``; return the summary.md section's lines and its PNGs (name ->
    bytes: the summary writes them beside summary.md and embeds them in summary.html)."""
    report = importances(df, record, evaluator)
    storage.write_bytes(storage.join(exp, "importance.json"), json.dumps(report, indent=2).encode())
    md = markdown(report)
    files = {}
    if report["importance"]:
        files["importance.png"] = bar_plot(report)
    finished = df[df["status"].isin(FINISHED)] if "status" in df else df
    plotted = finished[pd.to_numeric(finished.get("margin"), errors="coerce").map(math.isfinite)] \
        if "margin" in finished else finished.iloc[:0]
    keys = varied_keys(plotted)
    if keys and len(plotted) >= 2:
        files["parallel_coordinates.png"] = parallel_plot(plotted, keys, report["distributions"])
    return md + [f"![{n}]({n})" for n in files] + [""], files
