"""What matters: the importance of each varied hyperparameter for the final val margin and R@5.

Reads the summary's per-trial table (``summary.parquet``: ``config/<key>`` columns, final metrics, ``status``),
turns every finished trial into an Optuna trial and asks Optuna's PED-ANOVA evaluator (fANOVA on request) which
hyperparameters separate the best trials from the rest. Writes ``importance.json``, ``importance.png`` and
``parallel_coordinates.png`` into the experiment folder and returns the "What matters" section of summary.md.
"""
from __future__ import annotations

import io
import math
import warnings
from typing import Any

import pandas as pd

from tune_p7.core.ranking import varied
from tune_p7.errors import InputError
from tune_p7.experiment import IMPORTANCE_PLOTS, Experiment

TARGETS = {"margin": "final val margin", "r_at_5": "val R@5"}
FINISHED = ("completed", "asha_stopped", "bracket_ended", "gate_stopped")
STOPPED = ("asha_stopped", "bracket_ended", "gate_stopped")
STOPPED_RULE = ("Stopped trials (ASHA, a HyperBand bracket or a gate) count with their last reported val metrics, "
                "at the epoch they stopped: the value the scheduler judged them on")
# fANOVA by default: on searches of 10-40 trials where only lr matters it ranked lr first every time, while
# PED-ANOVA ranked a no-effect uniform key first in about 1 of 5 when lr was a two-value grid (its top quantile
# is a few trials of one plateau, told apart by noise). PED-ANOVA compares the top-quantile trials with all of
# them and its docstring asks for at least 5 trials in the top; with its default quantile 0.1 that needs 50
# trials, so the quantile grows to MIN_TOP / n on smaller searches. Below MIN_TRIALS the "top" would be half
# the trials or more (nothing to contrast), and a random forest (fANOVA) has too few points to split.
EVALUATORS = ("fanova", "ped_anova")
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
    from tune_p7.space.file import load_space

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


def _evaluator(name: str, n: int):
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
        import optuna  # only here: its import takes 1-2 s, and most small searches have too few trials

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        out["evaluator"], out["meaning"], ev = _evaluator(evaluator, len(used))
        study = optuna.create_study(direction="maximize")
        made = {k: optuna_distribution(specs[k]) for k in used_keys}
        study.add_trials([optuna.trial.create_trial(
            params={k: _plain(r[f"config/{k}"]) for k in used_keys}, distributions=made,
            value=float(values[i])) for i, r in used.iterrows()])
        with warnings.catch_warnings():  # small-sample notes; the minimum above already guards the result
            warnings.simplefilter("ignore")
            result = optuna.importance.get_param_importances(study, evaluator=ev)
        out["importance"][target] = {k: round(float(v), 4) for k, v in result.items()}
    return out


def _too_few(n: int, keys: list[str], values: pd.Series) -> str | None:
    if n < MIN_TRIALS:
        return (f"too few trials: {n} finished with a finite value, the importance evaluators need at least "
                f"{MIN_TRIALS}")
    if len(keys) < 2:
        return f"fewer than 2 varied hyperparameters among the finished trials ({', '.join(keys) or 'none'})"
    if values.nunique() < 2:
        return "every finished trial has the same value: nothing separates them"
    return None


def markdown(report: dict, plotted: bool = True) -> list[str]:
    """The "What matters" section of summary.md (``plotted``: with its PNGs)."""
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
           "for each target; they hold within this search's ranges and say nothing of the size of the effect"
           + (" (see the plots)." if plotted else "."), "",
           "| hyperparameter | sampled as | " + " | ".join(f"importance for {TARGETS[t]}" for t in done) + " |",
           "|---|---|" + "---|" * len(done)]
    for k in report["importance"][done[0]]:
        md.append(f"| {k} | {report['distributions'][k]} | "
                  + " | ".join(f"{report['importance'][t].get(k, math.nan):.3f}" for t in done) + " |")
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


def section(exp: str, df: pd.DataFrame, record: dict | None = None, evaluator: str = EVALUATORS[0],
            draw: bool = True, reuse: bool = False) -> tuple[list[str], dict[str, bytes]]:
    """Write importance.json and its PNGs into experiment ``exp``; return the summary.md section's lines and the
    PNGs (name -> bytes, for summary.html to embed). ``draw=False``: the report without PNGs. ``reuse`` takes the
    report and PNGs written just before for the same trials instead of fitting and drawing them again."""
    stored = Experiment(exp)
    before = stored.importance() if reuse else None
    if before is not None:
        files = stored.stored_files(IMPORTANCE_PLOTS)
        return markdown(before, plotted=bool(files)) + [f"![{n}]({n})" for n in files] + [""], files
    report = importances(df, record, evaluator)
    stored.write_importance(report)
    md = markdown(report, plotted=draw)
    files = {}
    if not draw:
        return md, files
    if report["importance"]:
        files[IMPORTANCE_PLOTS[0]] = bar_plot(report)
    finished = df[df["status"].isin(FINISHED)] if "status" in df else df
    plotted = finished[pd.to_numeric(finished.get("margin"), errors="coerce").map(math.isfinite)] \
        if "margin" in finished else finished.iloc[:0]
    keys = varied_keys(plotted)
    if keys and len(plotted) >= 2:
        files[IMPORTANCE_PLOTS[1]] = parallel_plot(plotted, keys, report["distributions"])
    stored.write_files(files)
    return md + [f"![{n}]({n})" for n in files] + [""], files
