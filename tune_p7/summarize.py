"""Rank the trials of one stored experiment: ``python tune_p7/summarize.py EXPERIMENT`` (path or URI).

Works from the experiment folder alone. Writes ``summary.md`` (ranked table), ``summary.parquet`` (one row a
trial) and PNG plots into the folder, and returns the table as text.
"""
from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402

from tune_p7 import cli, storage  # noqa: E402
from tune_p7.config import P7Config  # noqa: E402
from tune_p7.errors import InputError  # noqa: E402
from tune_p7.metrics import DRIFT, PASS, deploy_ok, verdict  # noqa: E402
from tune_p7.space import trial_config  # noqa: E402

SEARCH_FILE = "tune_p7_search.json"
VERDICT_ORDER = {"PASS": 0, "MARGINAL": 1, "FAIL": 2}
SHOWN = ["margin", "cos_next", "cos_prev", "cos_anchor", "r_at_5", "mrr_at_10", "direct_r_at_5", "direct_mrr_at_10"]


def read_results(exp: str, trial_dir: str) -> list[dict]:
    """A trial's result.json, one JSON object a line; a torn last line (crash mid-write) is skipped."""
    path = storage.join(exp, trial_dir, "result.json")
    if not storage.exists(path):
        return []
    rows = []
    for line in storage.read_bytes(path).decode("utf-8", "replace").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _error_text(exp: str, trial_dir: str, filename: str | None) -> str:
    if not filename or not storage.exists(storage.join(exp, trial_dir, filename)):
        return "error (no error file)"
    lines = [ln for ln in storage.read_bytes(storage.join(exp, trial_dir, filename)).decode(errors="replace")
             .splitlines() if ln.strip()]
    return lines[-1].strip()[:300] if lines else "error"


def classify(status: str, last: dict, epochs: int) -> tuple[str, str | None, str | None]:
    """(status, gate, error) of a trial from Tune's status and its last reported result."""
    if last.get("error"):
        return "errored", None, last["error"]
    if status == "ERROR":
        return "errored", None, None
    if last.get("gate"):
        return "gate_stopped", last["gate"], None
    if last.get("epoch", 0) >= epochs:
        return "completed", None, None
    if status == "TERMINATED":
        return "asha_stopped", None, None
    return "unfinished", None, None


def collect(exp: str) -> tuple[pd.DataFrame, dict[str, list[dict]]]:
    """One row per trial (unranked) and every trial's per-epoch results."""
    from ray.tune import ExperimentAnalysis

    try:
        analysis = ExperimentAnalysis(exp)
    except Exception as exc:  # Ray raises several types for a missing/unreadable experiment
        raise InputError(exp, f"not a readable Tune experiment ({' '.join(str(exc).split())[:200]})") from None
    rows, curves = [], {}
    for t in analysis.trials:
        trial_dir = t.storage.trial_dir_name
        results = read_results(exp, trial_dir)
        curves[t.trial_id] = results
        last = results[-1] if results else {}
        cfg = {**P7Config().to_dict(), **trial_config(t.config)}
        status, gate, error = classify(t.status, last, cfg["epochs"])
        if status == "errored" and error is None:
            error = _error_text(exp, trial_dir, t.run_metadata.error_filename)
        row = {"trial_id": t.trial_id, "status": status, "gate": gate, "stopped_epoch": int(last.get("epoch", 0)),
               "verdict": verdict(last), "deploy_ok": deploy_ok(last), "node": last.get("node"), "error": error,
               "trial_dir": trial_dir}
        row.update({f"config/{k}": v for k, v in cfg.items()})
        row.update({k: v for k, v in last.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        rows.append(row)
    return pd.DataFrame(rows), curves


def rank(df: pd.DataFrame) -> pd.DataFrame:
    """PASS > MARGINAL > FAIL, then deployment check passed, then best val margin (NaN last)."""
    if df.empty:
        return df.assign(rank=[])
    key = pd.DataFrame({"v": df["verdict"].map(VERDICT_ORDER), "d": ~df["deploy_ok"].astype(bool),
                        "m": -df.get("best_margin", pd.Series(math.nan, index=df.index)).fillna(-math.inf)})
    df = df.loc[key.sort_values(["v", "d", "m"], kind="stable").index].reset_index(drop=True)
    df.insert(0, "rank", range(1, len(df) + 1))
    return df


def varied(df: pd.DataFrame) -> list[str]:
    cols = [c for c in df.columns if c.startswith("config/") and c not in ("config/seed",)]
    return [c for c in cols if df[c].astype(str).nunique() > 1]


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
    return "" if v is None else str(v)


def table(df: pd.DataFrame) -> str:
    """The ranked table as Markdown: varied hyperparameters, final metrics, DIRECT's, how each trial ended."""
    var = varied(df)
    cols = ["rank", "trial_id", *var, *[c for c in SHOWN if c in df], "best_margin", "verdict", "deploy_ok",
            "status", "stopped_epoch"]
    cols = [c for c in cols if c in df]
    head = [c.replace("config/", "cfg.") for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        ended = r["status"] + (f" ({r['gate']})" if isinstance(r["gate"], str) else "")
        cells = [_fmt(r[c]) if c != "status" else ended for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plots(df: pd.DataFrame, curves: dict[str, list[dict]], gates: dict) -> dict[str, bytes]:
    """PNG learning curves (margin, cos_next, cos_anchor with gate and PASS lines) and final margin vs each
    varied hyperparameter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    lines = {"margin": [(gates.get("margin", 0.10), "margin gate"), (PASS["margin"], "PASS")],
             "cos_next": [(PASS["cos_next"], "PASS")],
             "cos_anchor": [(gates.get("drift", DRIFT), "drift gate"), (PASS["cos_anchor"], "PASS")]}
    for ax, (metric, refs) in zip(axes, lines.items()):
        for tid, rows in curves.items():
            ax.plot([r.get("epoch") for r in rows], [r.get(metric) for r in rows], marker="o", ms=3, label=tid)
        for y, label in refs:
            ax.axhline(y, ls="--", lw=1, color="red" if "gate" in label else "green", label=label)
        ax.set_title(metric)
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=6)
    out["curves.png"] = _png(fig)
    var = varied(df)
    if var and "margin" in df:
        fig, axes = plt.subplots(1, len(var), figsize=(4 * len(var), 3.5), squeeze=False)
        for ax, col in zip(axes[0], var):
            ax.scatter(df[col].astype(str), df["margin"])
            ax.axhline(PASS["margin"], ls="--", color="green", lw=1)
            ax.set_xlabel(col.removeprefix("config/"))
            ax.set_ylabel("final val margin")
        out["margin_vs_params.png"] = _png(fig)
    return out


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def versus_ridge(best: pd.Series, probe: dict) -> str:
    """One line: the top-ranked trial against the probe's ridge and DIRECT baselines on val."""
    base = probe["splits"]["val"]["baselines"]
    ridge, direct = base["ridge"], base["direct"]
    return (f"Top trial {best['trial_id']}: val margin {best.get('margin', math.nan):+.3f}, "
            f"R@5 {best.get('r_at_5', math.nan):.3f}, MRR@10 {best.get('mrr_at_10', math.nan):.3f}; "
            f"ridge: margin {ridge['margin']:+.3f}, R@5 {ridge['r_at_5']:.3f}, MRR@10 {ridge['mrr_at_10']:.3f}; "
            f"DIRECT: margin {direct['margin']:+.3f}, R@5 {direct['r_at_5']:.3f}, MRR@10 {direct['mrr_at_10']:.3f}. "
            f"Top trial minus ridge: margin {best.get('margin', math.nan) - ridge['margin']:+.3f}, "
            f"R@5 {best.get('r_at_5', math.nan) - ridge['r_at_5']:+.3f}.")


def summarize(exp: str) -> str:
    """Build, write and return the ranked summary of experiment ``exp`` (path or URI)."""
    exp = storage.normalize(exp)
    if not storage.exists(exp):
        raise InputError(exp, "no such experiment")
    search_file = storage.join(exp, SEARCH_FILE)
    search = json.loads(storage.read_bytes(search_file)) if storage.exists(search_file) else {}
    df, curves = collect(exp)
    df = rank(df)
    text = table(df)
    md = [f"# Summary of {exp.rsplit('/', 1)[-1]}", ""]
    for name in ("probe.md", "evaluation.md"):
        path = storage.join(exp, name)
        if storage.exists(path):
            md += [storage.read_bytes(path).decode(), ""]
    probe_file = storage.join(exp, "probe.json")
    if storage.exists(probe_file) and not df.empty:
        md += [versus_ridge(df.iloc[0], json.loads(storage.read_bytes(probe_file))), ""]
    counts = df["status"].value_counts().to_dict() if not df.empty else {}
    md += ["## Trials, ranked", "",
           "Ranked by verdict (PASS > MARGINAL > FAIL, from the final val metrics), then the deployment check "
           "(R@5 >= DIRECT + 0.10 and MRR@10 >= DIRECT + 0.05), then best val margin. Ended: "
           + ", ".join(f"{v} {k}" for k, v in counts.items()) + ".", "", text, ""]
    errored = df[df["status"] == "errored"] if not df.empty else df
    if len(errored):
        md += ["## Errors", ""] + [f"- {r.trial_id}: {r.error}" for r in errored.itertuples()] + [""]
    from tune_p7.pbt import schedules  # PBT/PB2: what the top trials ran, epoch by epoch

    md += schedules(df, curves)
    files = plots(df, curves, search.get("gates", {})) if not df.empty else {}
    md += [f"![{n}]({n})" for n in files]
    storage.write_bytes(storage.join(exp, "summary.md"), "\n".join(md).encode())
    buf = io.BytesIO()
    df.astype({c: str for c in df.columns if df[c].dtype == object}).to_parquet(buf, index=False)
    storage.write_bytes(storage.join(exp, "summary.parquet"), buf.getvalue())
    for n, data in files.items():
        storage.write_bytes(storage.join(exp, n), data)
    return text


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python tune_p7/summarize.py", description=__doc__.splitlines()[0])
    p.add_argument("experiment", help="experiment folder or URI (e.g. ray_results/smoke-20261124-101500)")
    a = p.parse_args(argv)
    print(summarize(a.experiment))
    return 0


if __name__ == "__main__":
    cli.run(main)
