"""The ranked summary of one stored experiment (path or URI): ``summarize(exp)``, the command ``python
tune_p7/summarize.py EXPERIMENT``.

Works from the experiment folder alone (the search record, the probe, every trial's result.json). Writes
``summary.md`` (probe, warnings, the top rows of the ranked table, plots), ``summary.html`` (the same as one
self-contained page), ``summary.parquet`` (every trial, one row each) and the PNG plots (``plots.py``) into the
folder, and returns the table's top rows as text.
"""
from __future__ import annotations

import io
import math

import pandas as pd

from tune_p7 import storage
from tune_p7.core.config import P7Config
from tune_p7.core.ranking import RANKING, fmt, ranked_index, varied
from tune_p7.core.verdicts import deploy_ok, verdict
from tune_p7.errors import InputError, one_line
from tune_p7.experiment import IMPORTANCE_PLOTS, PLOTS, Experiment
from tune_p7.report import conclusions, importance
from tune_p7.report.plots import References, hp_label, plots
from tune_p7.report.report_html import to_html
from tune_p7.space.file import trial_config
from tune_p7.tuning.continuation import chain_trials, relative_dir
from tune_p7.tuning.pbt_history import schedules

TOP_ROWS = 20  # rows of the ranked table in summary.md and on the console; summary.parquet holds all
# the table's metrics, each followed by DIRECT's value on the same bank (None: DIRECT has no counterpart)
PAIRS = [("margin", "direct_margin"), ("cos_next", "direct_cos_next"), ("cos_prev", None), ("cos_anchor", None),
         ("r_at_5", "direct_r_at_5"), ("mrr_at_10", "direct_mrr_at_10"), ("r_at_5_xctx", "direct_r_at_5_xctx"),
         ("mrr_at_10_xctx", "direct_mrr_at_10_xctx"), ("contrastive_accuracy", "direct_contrastive_accuracy"),
         ("copy_rate", None)]
HEADERS = {"margin": "margin", "direct_margin": "DIRECT margin", "direct_cos_next": "DIRECT cos_next",
           "r_at_5": "R@5", "direct_r_at_5": "DIRECT R@5", "mrr_at_10": "MRR@10", "direct_mrr_at_10": "DIRECT MRR@10",
           "r_at_5_xctx": "R@5 xctx", "direct_r_at_5_xctx": "DIRECT R@5 xctx", "mrr_at_10_xctx": "MRR@10 xctx",
           "direct_mrr_at_10_xctx": "DIRECT MRR@10 xctx", "contrastive_accuracy": "contrastive acc",
           "direct_contrastive_accuracy": "DIRECT contrastive acc", "copy_rate": "copy rate",
           "best_margin": "best margin", "deploy_ok": "deploy",
           "status": "ended", "stopped_epoch": "epochs"}


def _error_text(exp: str, trial_dir: str, filename: str | None) -> str:
    if not filename or not storage.exists(storage.join(exp, trial_dir, filename)):
        return "error (no error file)"
    lines = [ln for ln in storage.read_bytes(storage.join(exp, trial_dir, filename)).decode(errors="replace")
             .splitlines() if ln.strip()]
    return lines[-1].strip()[:300] if lines else "error"


def classify(status: str, last: dict, epochs: int, finished: bool = False) -> tuple[str, str | None, str | None]:
    """(status, gate, error) of a trial from Tune's stored status and its last reported result. ``finished``: the
    search ended by itself (not by a signal), so a trial stored as PAUSED was ended by its scheduler when the
    search ended (a HyperBand / BOHB bracket that closed before promoting it: tune_p7.tuning.ending), not cut
    short."""
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
    if status == "PAUSED" and finished:
        return "bracket_ended", None, None
    return "unfinished", None, None


def own_best(results: list[dict]) -> dict:
    """{best_margin, best_epoch}: the best finite val margin among the epochs the trial reported itself. Under
    PBT a trial goes on from another trial's checkpoint and never reports that trial's epochs, so it is never
    credited with them; NaN and none when no epoch has a finite margin."""
    scored = [(r["margin"], r.get("epoch", 0)) for r in results
              if isinstance(r.get("margin"), (int, float)) and math.isfinite(r["margin"])]
    if not scored:
        return {"best_margin": math.nan, "best_epoch": 0}
    margin, epoch = max(scored, key=lambda x: x[0])
    return {"best_margin": margin, "best_epoch": int(epoch)}


def collect(exp: str, finished: bool = False) -> tuple[pd.DataFrame, dict[str, list[dict]]]:
    """One row per trial (unranked) and every trial's per-epoch results; a continued search's rows hold the trials
    of the searches it continues too (``experiment``: the folder name of each trial's search; ``trial_dir``
    relative to ``exp``); ``finished``: as in classify (the searches it continues ended by themselves)."""
    try:
        trials = chain_trials(exp)
    except Exception as exc:  # Ray raises several types for a missing/unreadable experiment
        raise InputError(exp, f"not a readable Tune experiment ({one_line(exc)})") from None
    rows, curves = [], {}
    for path, t in trials:
        trial_dir = relative_dir(exp, path, t.storage.trial_dir_name)
        results = Experiment(exp).trial_results(trial_dir)
        curves[t.trial_id] = results
        last = results[-1] if results else {}
        cfg = {**P7Config().to_dict(), **trial_config(t.config)}
        status, gate, error = classify(t.status, last, cfg["epochs"], finished or path != exp)
        if status == "errored" and error is None:
            error = _error_text(exp, trial_dir, t.run_metadata.error_filename)
        row = {"trial_id": t.trial_id, "status": status, "gate": gate, "stopped_epoch": int(last.get("epoch", 0)),
               "verdict": verdict(last), "deploy_ok": deploy_ok(last), "node": last.get("node"), "error": error,
               "trial_dir": trial_dir, "stopped_learning": status == "gate_stopped" and deploy_ok(last),
               "experiment": path.rsplit("/", 1)[-1]}
        row.update({f"config/{k}": v for k, v in cfg.items()})
        row.update({k: v for k, v in last.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        row.update(own_best(results))
        rows.append(row)
    return pd.DataFrame(rows), curves


def rank(df: pd.DataFrame) -> pd.DataFrame:
    """Order by the shared ranking key (tune_p7.core.ranking.RANKING) on the final val metrics and the best val margin."""
    if df.empty:
        return df.assign(rank=[])
    df = df.loc[ranked_index(df, margin="best_margin" if "best_margin" in df else "margin")].reset_index(drop=True)
    df.insert(0, "rank", range(1, len(df) + 1))
    return df


def samplers(df: pd.DataFrame, record: dict) -> dict[str, str]:
    """The sampler of each varied key: from the search record, else guessed from the values (positive floats
    spanning a factor of 10 or more are taken as loguniform)."""
    known = dict(record.get("samplers") or {})
    for col in varied(df):
        name = col.removeprefix("config/")
        v = df[col]
        if name in known or not pd.api.types.is_float_dtype(v):
            continue
        if (v > 0).all() and v.nunique() > 3 and v.max() >= 10 * v.min():
            known[name] = "loguniform"
    return known


def table(df: pd.DataFrame, sampler: dict[str, str], limit: int | None = TOP_ROWS) -> str:
    """The ranked table as Markdown: varied hyperparameters, the key metrics each beside DIRECT's, how each trial
    ended (``†``: stopped by a gate while it passed the deployment check); the first ``limit`` rows."""
    var = varied(df)
    metrics = [c for pair in PAIRS for c in pair if c and c in df]
    cols = ["rank", "trial_id", *var, *metrics, "best_margin", "verdict", "deploy_ok", "status", "stopped_epoch"]
    cols = [c for c in cols if c in df]
    head = [hp_label(c, df) if c.startswith("config/") else HEADERS.get(c, c) for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(cols)]
    for _, r in (df if limit is None else df.head(limit)).iterrows():
        ended = r["status"] + (f" ({r['gate']})" if isinstance(r["gate"], str) else "") + \
            (" †" if r.get("stopped_learning") else "")
        cells = [ended if c == "status" else fmt(r[c], sampler.get(c[7:]) if c.startswith("config/") else None)
                 for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    more = len(df) - len(lines) + 2
    if more > 0:
        lines += ["", f"... and {more} more trial{'s' * (more > 1)} in summary.parquet."]
    return "\n".join(lines)


def versus_ridge(best: pd.Series, probe: dict) -> str:
    """One line: the top-ranked trial against the probe's ridge, kNN-successor (where the probe has it) and DIRECT
    baselines on val."""
    base = probe["splits"]["val"]["baselines"]
    ridge, direct = base["ridge"], base["direct"]
    k, mine = probe.get("context_length"), best.get("config/context_length")
    other = (f" (the probe's references read {k} chunks, this trial {mine}: the Confirmed section compares each "
             "configuration with ridge at its own context length)") if k is not None and mine not in (None, k) else ""
    refs = {"ridge": ridge, **({"kNN-successor": base["knn"]} if "knn" in base else {}), "DIRECT": direct}
    return (f"Top trial {best['trial_id']}{other}: val margin {best.get('margin', math.nan):+.3f}, "
            f"R@5 {best.get('r_at_5', math.nan):.3f}, MRR@10 {best.get('mrr_at_10', math.nan):.3f}; "
            + "; ".join(f"{name}: margin {m['margin']:+.3f}, R@5 {m['r_at_5']:.3f}, MRR@10 {m['mrr_at_10']:.3f}"
                        for name, m in refs.items())
            + f". Top trial minus ridge: margin {best.get('margin', math.nan) - ridge['margin']:+.3f}, "
            f"R@5 {best.get('r_at_5', math.nan) - ridge['r_at_5']:+.3f}.")


def references(probe: dict, df: pd.DataFrame, gates: dict) -> References:
    """The plots' reference values: the probe's val baselines (ridge and kNN-successor included) and oracle, or
    DIRECT's from the trials."""
    val = probe.get("splits", {}).get("val", {})
    base = val.get("baselines", {})
    direct = dict(base.get("direct") or {})
    if not direct and not df.empty:
        direct = {k.removeprefix("direct_"): df[k].median() for k in df.columns if k.startswith("direct_")}
    return References(direct, dict(base.get("ridge") or {}), dict(val.get("oracle") or {}), gates,
                      dict(base.get("knn") or {}))


def header(exp: str, search: dict, probe: dict) -> list[str]:
    """Title, what ran on what, precision, and the probe's warnings (above everything else they qualify)."""
    md = [f"# Summary of {exp.rsplit('/', 1)[-1]}", ""]
    facts = [f"space `{search['space']}`" if search.get("space") else "",
             f"data `{search['data']}`" if search.get("data") else ""]
    prec = search.get("precision")
    if isinstance(prec, dict):
        facts.append(f"precision requested {prec.get('requested')}, used {prec.get('used')}")
    if any(facts):
        md += ["Search: " + "; ".join(f for f in facts if f) + ".", ""]
    warnings = [w for w in probe.get("warnings") or [] if isinstance(w, str)]
    if warnings:
        md += [f"- {w}" for w in warnings] + [""]
    return md


def chance_line(probe: dict) -> str | None:
    """The chance level k / bank of R@k on the val bank (the probe's ``splits.val.bank``, a chunk count)."""
    bank = probe.get("splits", {}).get("val", {}).get("bank")
    if not isinstance(bank, int) or bank <= 0:
        return None
    return (f"Chance level of R@k is k / bank: the val bank holds {bank} chunks, so R@1 {fmt(1 / bank)}, "
            f"R@5 {fmt(5 / bank)}, R@10 {fmt(10 / bank)}.")


def stopped_line(learning: int, gated: int) -> str:
    """How many trials a gate stopped while they passed the deployment check."""
    if not gated:
        return "Stopped while learning: none (no trial was stopped by a gate)."
    them = "it" if gated == 1 else "them"
    return (f"Stopped while learning: {learning} of {gated} gate-stopped trial{'s' * (gated != 1)} passed the "
            f"deployment check when the gate stopped {them} (marked † in the table)"
            + (": the gate may be wrong for this data, see the probe's oracle." if learning else "."))


def continued_line(exp: str, df: pd.DataFrame) -> list[str]:
    """For a continued search, which searches the table ranks together (none for a search of its own)."""
    if df.empty or df["experiment"].nunique() < 2:
        return []
    own = exp.rsplit("/", 1)[-1]
    counts = df["experiment"].value_counts()
    earlier = ", ".join(f"{n} ({counts[n]} trials)" for n in counts.index if n != own)
    return [f"This search continues {earlier}: the table ranks their trials and its own {counts.get(own, 0)} "
            "together (column `experiment` of summary.parquet).", ""]


def markdown(exp: str, df: pd.DataFrame, search: dict, probe: dict, sampler: dict, images: list[str],
             sections: list[str] = ()) -> str:
    md = header(exp, search, probe)
    stored = Experiment(exp)
    for text in (stored.probe_md(), stored.evaluation_md()):  # the evaluation, if one was made since
        if text is not None:
            md += [text, ""]
    if probe.get("splits", {}).get("val", {}).get("baselines") and not df.empty:
        md += [versus_ridge(df.iloc[0], probe), ""]
    counts = df["status"].value_counts().to_dict() if not df.empty else {}
    learning = int(df["stopped_learning"].sum()) if not df.empty else 0
    md += ["## Trials, ranked", ""] + continued_line(exp, df) + [
           f"Ranked by {RANKING} (verdict and deployment check from the final val metrics, margin: the best val "
           "margin of any epoch). Ended: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + ".", "",
           stopped_line(learning, counts.get("gate_stopped", 0)), ""]
    chance = chance_line(probe)
    md += ([chance, ""] if chance else []) + [table(df, sampler), ""]
    errored = df[df["status"] == "errored"] if not df.empty else df
    if len(errored):
        md += ["## Errors", ""] + [f"- {r.trial_id}: {r.error}" for r in errored.itertuples()] + [""]
    md += list(sections)
    if images:
        md += ["## Plots", ""] + [f"![{n}]({n})" for n in images] + [""]
    elif not df.empty:
        md += ["## Plots", "", "None drawn (the search ran with --no-plots): `python tune_p7/summarize.py "
               f"{exp}` draws them.", ""]
    return "\n".join(md)


def summarize(exp: str, draw: bool = True, reuse: bool = False) -> str:
    """Build and write summary.md, summary.html, summary.parquet and the plots of experiment ``exp`` (path or
    URI); returns the ranked table (its first rows) as text. ``draw=False`` (a search with --no-plots) draws none
    and deletes the plots an earlier summary of the experiment drew (they showed other trials or epochs).
    ``reuse`` takes the plots and the importance report this search's summary wrote just before, if any
    (summarizing again after the confirmation stage, which adds a section, not a curve or a trial)."""
    stored = Experiment(exp)
    exp = stored.path
    if not stored.exists():
        raise InputError(exp, "no such experiment")
    search, probe = stored.record() or {}, stored.probe() or {}
    df, curves = collect(exp, "search" in search.get("ended", {}))
    df = rank(df)
    sampler = samplers(df, search)
    if reuse:
        files = stored.stored_files(PLOTS)
    elif draw:
        files = plots(df, curves, references(probe, df, search.get("gates", {})), varied(df), sampler)
        stored.write_files(files)
    else:
        files = {}
        stored.remove_files(PLOTS + IMPORTANCE_PLOTS)
    matters, matters_files = importance.section(exp, df, search, draw=draw, reuse=reuse)
    confirmed = [conclusions.markdown(exp), ""] if stored.has_confirmed() else []  # the confirmation, if made since
    md = markdown(exp, df, search, probe, sampler, list(files), confirmed + schedules(df, curves) + matters)
    files.update(matters_files)
    buf = io.BytesIO()
    df.astype({c: str for c in df.columns if df[c].dtype == object}).to_parquet(buf, index=False)
    stored.write_summary(buf.getvalue(), md, to_html(md, files, f"tune_p7 summary: {stored.name}"))
    return table(df, sampler)
