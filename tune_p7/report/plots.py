"""The summary's PNG plots, drawn from the ranked trials, their per-epoch results and the probe's baselines.

- ``curves.png``: margin, cos_next, cos_anchor and R@5 per epoch; the top trials by rank in colour (legend outside
  the axes), every other trial thin grey; on each panel the thresholds that apply to it (gate, PASS, deployment)
  and DIRECT's, ridge's and the oracle's values as labelled reference lines.
- ``margin_vs_params.png`` / ``r_at_5_vs_params.png``: the final val margin / R@5 of every trial against each
  varied hyperparameter, at most 4 panels a row; numeric keys on numeric axes (log for loguniform ranges),
  categorical keys as jittered strips.

Every PNG carries its layout in its ``Description`` text chunk (JSON: ``grid`` [rows, cols] of the panels,
``legend`` the legend's entries, ``panels`` each panel's title, reference labels and x scale), read back from the
figure itself, so what a reader sees can be checked without looking.
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tune_p7.core.verdicts import DEPLOY_R5, DRIFT, PASS
from tune_p7.experiment import PLOTS

TOP = 8  # trials drawn in colour
DPI = 100
PANEL = (3.7, 2.8)  # inches per panel
PER_ROW = 4
TRIAL_COLOURS = ["#1f77b4", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#393b79", "#637939"]
STATUS_COLOURS = {"completed": "#1f77b4", "asha_stopped": "#9a9a9a", "bracket_ended": "#c7c7c7",
                  "gate_stopped": "#d62728", "unfinished": "#000000"}
# reference lines: (colour, line style)
STYLE = {"PASS": ("#2ca02c", "--"), "margin gate": ("#d62728", "--"), "drift gate": ("#ff7f0e", "--"),
         "escape gate": ("#a0522d", "--"), "deploy": ("#2ca02c", "-."), "DIRECT": ("#000000", "-."),
         "ridge": ("#6a3d9a", ":"), "kNN": ("#01665e", ":"), "oracle": ("#8c510a", ":")}


@dataclass
class References:
    """The numbers a trial is read against: the baselines' val metrics (from the probe, DIRECT's from the trials
    when there is no probe) and the search's gates."""
    direct: dict = field(default_factory=dict)
    ridge: dict = field(default_factory=dict)
    oracle: dict = field(default_factory=dict)
    gates: dict = field(default_factory=dict)
    knn: dict = field(default_factory=dict)  # the kNN-successor's

    def baselines(self, metric: str) -> list[tuple[str, str, float]]:
        """(style, label, value) of DIRECT's, ridge's, the kNN-successor's and the oracle's val ``metric``, where
        known."""
        return [(name, name + " {v}", float(d[metric])) for name, d in
                (("DIRECT", self.direct), ("ridge", self.ridge), ("kNN", self.knn), ("oracle", self.oracle))
                if _finite(d.get(metric))]

    def thresholds(self, metric: str) -> list[tuple[str, str, float]]:
        """(style, label, value) of the gates and pass lines that apply to ``metric``."""
        g = self.gates
        out = {"margin": [("margin gate", "margin gate {v}", g.get("margin", 0.10))],
               "cos_anchor": [("drift gate", "drift gate {v}", g.get("drift", DRIFT))],
               "cos_next": [("escape gate", "escape gate {v}", g.get("escape"))]}.get(metric, [])
        if metric in PASS:
            out.append(("PASS", "PASS {v}", PASS[metric]))
        if metric == "r_at_5" and _finite(self.direct.get("r_at_5")):
            out.append(("deploy", f"deploy {{v}} (DIRECT + {DEPLOY_R5:.2f})", self.direct["r_at_5"] + DEPLOY_R5))
        return [(s, lab, float(v)) for s, lab, v in out if _finite(v)]


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ylim(ax, lines: list[tuple[str, str, float]], data: np.ndarray) -> tuple[float, float]:
    """Set and return y limits spanning the finite ``data`` and the reference values near it (within 1.5 times
    the data's spread)."""
    data = data[np.isfinite(data)]
    lo, hi = (float(data.min()), float(data.max())) if len(data) else (0.0, 1.0)
    reach = 1.5 * max(hi - lo, 0.1)
    near = [v for _, _, v in lines if lo - reach <= v <= hi + reach]
    lo, hi = min([lo, *near]), max([hi, *near])
    pad = 0.06 * max(hi - lo, 0.05)
    ax.set_ylim(lo - pad, hi + pad)
    return ax.get_ylim()


def _draw_references(ax, lines: list[tuple[str, str, float]], data: np.ndarray) -> None:
    """Horizontal reference lines, each labelled "name value" at the right edge (labels that would overlap are
    pushed apart). The y range follows the trials' values; a reference far outside it is not drawn as a line
    but labelled at the top or bottom edge with an arrow, so a distant baseline does not squash the curves."""
    lo, hi = _ylim(ax, lines, data)
    spots = []
    for style, label, v in lines:
        colour, ls = STYLE[style]
        text = label.format(v=f"{v:.2f}")
        if lo <= v <= hi:
            ax.axhline(v, color=colour, ls=ls, lw=1.1, zorder=1)
            spots.append(((v - lo) / (hi - lo), style, text))
        else:
            spots.append((0.985 if v > hi else 0.015, style, ("\u25b2 " if v > hi else "\u25bc ") + text))
    spots.sort()
    gap, placed = 0.08, []
    for frac, style, text in spots:
        placed.append([max(frac, placed[-1][0] + gap) if placed else frac, style, text])
    overflow = placed[-1][0] - 0.985 if placed else 0
    if overflow > 0:  # shift the stack down, never below the axes
        for p in placed:
            p[0] = max(p[0] - overflow, 0.015)
    for frac, style, text in placed:
        ax.text(0.99, frac, text, transform=ax.transAxes, ha="right", va="center", fontsize=7,
                color=STYLE[style][0], zorder=5, bbox=dict(fc="white", ec="none", alpha=0.75, pad=0.6))


CURVES = [("margin", "val margin"), ("cos_next", "val cos_next"), ("cos_anchor", "val cos_anchor"),
          ("r_at_5", "val R@5")]


def curves(ranked: pd.DataFrame, results: dict[str, list[dict]], refs: References) -> bytes:
    """curves.png: the four val metrics per epoch (see the module docstring)."""
    plt = _plt()
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(CURVES), figsize=(PANEL[0] * len(CURVES) + 2.4, PANEL[1] + 0.4),
                             squeeze=False, layout="constrained")
    top = ranked.head(TOP)[["trial_id", "rank", "verdict"]]  # itertuples over a summary's ~100 columns is slow
    others = ranked.iloc[TOP:]
    handles = []
    for ax, (metric, title) in zip(axes[0], CURVES):
        values = np.array([r.get(metric, np.nan) for rows in results.values() for r in rows], dtype=float)
        for tid in others["trial_id"]:
            rows = results.get(tid, [])
            ax.plot([r.get("epoch") for r in rows], [r.get(metric, np.nan) for r in rows], color="#c8c8c8",
                    lw=0.7, zorder=2)
        for colour, r in zip(TRIAL_COLOURS, top.itertuples()):
            rows = results.get(r.trial_id, [])
            ax.plot([x.get("epoch") for x in rows], [x.get(metric, np.nan) for x in rows], color=colour, lw=1.6,
                    marker="o", ms=3, zorder=3)
        _draw_references(ax, refs.thresholds(metric) + refs.baselines(metric), values)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.25)
    for colour, r in zip(TRIAL_COLOURS, top.itertuples()):
        handles.append(Line2D([], [], color=colour, lw=1.6, marker="o", ms=3,
                              label=f"#{r.rank} {r.trial_id} ({r.verdict})"))
    if len(others):
        handles.append(Line2D([], [], color="#c8c8c8", lw=0.7, label=f"{len(others)} other trials"))
    fig.legend(handles=handles, loc="outside right center", fontsize=8, title="trials by rank", title_fontsize=8)
    return _png(fig)


def hp_label(key: str, df: pd.DataFrame) -> str:
    """A hyperparameter's name ("config/<name>" column); "cfg.<name>" where a metric has the same name (the hinge
    ``margin`` beside the val margin)."""
    name = key.removeprefix("config/")
    return "cfg." + name if name in df.columns else name


def axis_kind(values: pd.Series, sampler: str | None) -> str:
    """'log', 'numeric' or 'categorical' axis for a hyperparameter."""
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if not numeric:
        return "categorical"
    return "log" if sampler == "loguniform" and (values > 0).all() else "numeric"


def _positions(values: pd.Series, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, list | None]:
    """x positions (jittered where few distinct values would stack points) and, for strips, the categories."""
    if kind == "categorical":
        cats = sorted(values.astype(str).unique())
        x = values.astype(str).map({c: i for i, c in enumerate(cats)}).to_numpy(float)
        return x + rng.uniform(-0.18, 0.18, len(x)), cats
    x = values.to_numpy(float)
    if values.nunique() <= 6 and values.nunique() > 1:
        t = np.log10(x) if kind == "log" else x
        spread = (t.max() - t.min()) * 0.015
        t = t + rng.uniform(-spread, spread, len(t))
        x = 10 ** t if kind == "log" else t
    return x, None


def outcome_grid(df: pd.DataFrame, keys: list[str], samplers: dict[str, str], metric: str, ylabel: str,
                 refs: References) -> bytes:
    """A trial's final ``metric`` against each hyperparameter in ``keys`` ("config/<name>" columns), coloured by
    how the trial ended, with the thresholds and baselines of ``metric`` drawn across every panel."""
    plt = _plt()
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    cols = min(PER_ROW, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL[0] * cols, PANEL[1] * rows + 0.7), squeeze=False,
                             sharey=True, layout="constrained")
    rng = np.random.default_rng(0)
    y = df[metric].to_numpy(float) if metric in df else np.full(len(df), np.nan)
    lines = [t for t in refs.thresholds(metric) if not t[0].endswith("gate")] + refs.baselines(metric)
    for ax, key in zip(axes.flat, keys):
        name = key.removeprefix("config/")
        kind = axis_kind(df[key], samplers.get(name))
        x, cats = _positions(df[key], kind, rng)
        for status, colour in STATUS_COLOURS.items():
            sel = (df["status"] == status).to_numpy()
            ax.scatter(x[sel], y[sel], s=18, color=colour, alpha=0.8, edgecolors="none", zorder=3)
        for style, _, v in lines:
            ax.axhline(v, color=STYLE[style][0], ls=STYLE[style][1], lw=1.1, zorder=1)
        if pd.api.types.is_integer_dtype(df[key]):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if cats is not None:
            ax.set_xticks(range(len(cats)), cats, rotation=30 if sum(map(len, cats)) > 24 else 0, fontsize=8)
            ax.set_xlim(-0.6, len(cats) - 0.4)
        elif kind == "log":
            ax.set_xscale("log")
            # ticks at 1, 2, 5 x 10^n: a range of one or two decades gets a few readable labels, none overlapping
            ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(hp_label(key, df) + (" (log)" if kind == "log" else ""))
        ax.grid(alpha=0.25)
    lo, hi = _ylim(axes[0, 0], lines, y)  # shared by every panel
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    for ax in list(axes.flat)[len(keys):]:
        ax.remove()
    handles = [Line2D([], [], ls="", marker="o", color=c, label=s.replace("_", " "))
               for s, c in STATUS_COLOURS.items() if (df["status"] == s).any()]
    handles += [Line2D([], [], color=STYLE[s][0], ls=STYLE[s][1], label=lab.format(v=f"{v:.2f}")
                       + ("" if lo <= v <= hi else " (off scale)")) for s, lab, v in lines]
    fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 8), fontsize=8)
    return _png(fig)


def _layout(fig) -> dict:
    grids = {ax.get_subplotspec().get_geometry()[:2] for ax in fig.axes if ax.get_subplotspec() is not None}
    legend = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    panels = [{"title": ax.get_title() or ax.get_xlabel(), "labels": [t.get_text() for t in ax.texts],
               "xscale": ax.get_xscale()} for ax in fig.axes]
    return {"grid": [list(g) for g in sorted(grids)], "legend": legend, "panels": panels}


def _png(fig) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Description": json.dumps(_layout(fig))})
    plt.close(fig)
    return buf.getvalue()


def plots(ranked: pd.DataFrame, results: dict[str, list[dict]], refs: References, varied: list[str],
          samplers: dict[str, str]) -> dict[str, bytes]:
    """Every PNG of the summary, by file name (experiment.PLOTS, those the trials give)."""
    if ranked.empty:
        return {}
    out = {PLOTS[0]: curves(ranked, results, refs)}
    if varied:
        out[PLOTS[1]] = outcome_grid(ranked, varied, samplers, "margin", "final val margin", refs)
        if "r_at_5" in ranked:
            out[PLOTS[2]] = outcome_grid(ranked, varied, samplers, "r_at_5", "final val R@5", refs)
    return out
