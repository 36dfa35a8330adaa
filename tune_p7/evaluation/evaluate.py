"""Held-out evaluation and model selection: ``tune-p7 evaluate EXPERIMENT [options]``.

Takes the top K trials of an experiment (folder or URI) by the summary's rank, skipping trials without a
checkpoint, and loads each trial's best checkpoint (the highest val margin among the checkpoints Tune kept).
Every checkpoint is checked against the data first (split present, vector dimension, context length), then
evaluated on a held-out split with the metrics the trials report, beside the DIRECT (copy ctx[-1]) and centroid
baselines on the same bank and the probe's ridge baseline (from ``probe.json``, when it was computed on the same
data), and timed: p50/p95 latency per query at batch 1 and throughput at batch 1024. The model is chosen on val,
never on the held-out split: the best candidate by the summary's ranking key (``tune_p7.core.ranking.ranking_key``) applied
to its checkpoint's val metrics; the held-out split is only reported. Writes ``evaluation.parquet`` (one row a
model) and ``evaluation.md`` into the experiment folder and refreshes ``summary.md``, which embeds ``evaluation.md``.

Splits: ``ood`` (default) is held out from both training and selection; ``test`` is an alias of ``ood``; ``val``
is the split the trials were ranked on (not held out: for comparison only).

``--export DIR`` writes the chosen model as a self-contained folder: ``model.pt`` (state dict, loads with
``torch.load(weights_only=True)``), ``config.json`` (the P7Config keys and ``dim``), ``metrics.json`` (held-out
and val metrics) and ``example.py`` (``python DIR/example.py [CONTEXT.npy [OUT.npy]]``; uses ``load_exported``).
"""
from __future__ import annotations

import argparse
import io
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn


from tune_p7 import cli, storage
from tune_p7.core import verdicts as V
from tune_p7.core.baselines import Centroid, CopyLast
from tune_p7.core.config import P7Config
from tune_p7.core.fastpath import use_bf16
from tune_p7.core.loop import Evaluator
from tune_p7.core.ranking import RANKING, fmt
from tune_p7.data.loading import P7Data, load
from tune_p7.errors import InputError
from tune_p7.experiment import EVALUATION, EVALUATION_MD, PROBE, RECORD, SUMMARY_MD, Experiment
from tune_p7.evaluation.export import export
from tune_p7.evaluation.selection import build, check_fits, choose_candidates, chosen_index, load_state, read_summary

SPLIT_ALIASES = {"ood": "ood", "test": "ood", "val": "val"}
METRICS = ("cos_next", "cos_prev", "margin", "cos_anchor", "cos_raw_anchor", "r_at_1", "r_at_5", "r_at_10",
           "mrr_at_10", "r_at_1_xctx", "r_at_5_xctx", "r_at_10_xctx", "mrr_at_10_xctx")
LATENCY_RUNS, LATENCY_WARMUP, THROUGHPUT_BATCH = 200, 20, 1024


# ----------------------------------------------------------------------------------------------- timing
@torch.inference_mode()
def timing(model: nn.Module, contexts: torch.Tensor, bf16: bool, runs: int = LATENCY_RUNS,
           warmup: int = LATENCY_WARMUP, min_seconds: float = 1.0) -> dict[str, float]:
    """p50/p95 latency (ms) of single-context forward passes and throughput (queries/s) at len(contexts)."""
    model.eval()

    def forward(x):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model(x).q

    for i in range(warmup):
        forward(contexts[i % len(contexts)][None])
    times = np.empty(runs)
    for i in range(runs):
        x = contexts[i % len(contexts)][None]
        t0 = time.perf_counter()
        forward(x)
        times[i] = time.perf_counter() - t0
    forward(contexts)
    reps, t0 = 0, time.perf_counter()
    while reps < 3 or (time.perf_counter() - t0 < min_seconds and reps < 100):
        forward(contexts)
        reps += 1
    elapsed = time.perf_counter() - t0
    return {"latency_p50_ms": float(np.percentile(times, 50) * 1e3),
            "latency_p95_ms": float(np.percentile(times, 95) * 1e3),
            "throughput_qps": len(contexts) * reps / elapsed, "throughput_batch": len(contexts)}


# ----------------------------------------------------------------------------------------------- probe
def ridge_from_probe(exp: str, split: str, same_data: bool) -> tuple[dict | None, str | None]:
    """(ridge metrics row with the probe's DIRECT for the deploy check, note) from probe.json, if usable."""
    stored = Experiment(exp)
    if not stored.exists(PROBE):
        return None, None
    if not same_data:
        return None, "ridge omitted: probe.json was computed on the search's data, not on --data"
    try:
        probe = stored.probe()
        s = probe["splits"][split]
        base = s.get("baselines", s)
        ridge, direct = dict(base["ridge"]), base.get("direct", {})
        k = int(probe.get("context_length", 0)) or None
    except (KeyError, TypeError, ValueError, AttributeError):
        return None, f"ridge omitted: probe.json has no ridge baseline for the {split} split"
    row = {m: float(ridge[m]) for m in METRICS if isinstance(ridge.get(m), (int, float))}
    row["context_length"] = k
    if isinstance(s.get("windows"), int):
        row["windows"] = s["windows"]
    for m in ("r_at_5", "mrr_at_10"):
        if isinstance(direct.get(m), (int, float)):
            row[f"direct_{m}"] = float(direct[m])
    return row, None


# ----------------------------------------------------------------------------------------------- report
TABLE = [("model", "model"), ("arch", "arch"), ("context_length", "K"), ("epoch", "epoch"),
         ("margin", "margin"), ("cos_next", "cos_next"), ("cos_prev", "cos_prev"), ("cos_anchor", "cos_anchor"),
         ("r_at_1", "R@1"), ("r_at_5", "R@5"), ("r_at_10", "R@10"), ("mrr_at_10", "MRR@10"),
         ("verdict", "verdict"), ("deploy_ok", "deploy"), ("val_margin", "val margin"),
         ("latency_p50_ms", "p50 ms"), ("latency_p95_ms", "p95 ms"), ("throughput_qps", "queries/s")]


def markdown(df: pd.DataFrame, split: str, exp: str, data_path: str, notes: list[str]) -> str:
    trials = df[df["kind"] == "trial"]
    chosen = trials[trials["chosen"]].iloc[0]
    held = "held out from training and selection" if split == "ood" else \
        "the split the trials were ranked on: not held out"
    lines = [f"## Held-out evaluation ({split} split)", "",
             f"Top {len(trials)} trial(s) of the summary, each at its best checkpoint by val margin, on the "
             f"**{split}** split of `{data_path}` ({held}): {int(chosen['windows'])} windows, retrieval among "
             f"{int(chosen['bank'])} chunks. Same metrics as the trials report; DIRECT = copy ctx[-1], centroid = "
             "normalised context mean, on the same bank.", "",
             "| " + " | ".join(h for _, h in TABLE) + " |", "|" + "---|" * len(TABLE)]
    for _, r in df.iterrows():
        cells = []
        for key, _ in TABLE:
            v = r.get(key)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                cells.append("")  # a baseline has no epoch, val margin or timing
            elif key in ("context_length", "epoch") and isinstance(v, (int, float)) and not pd.isna(v):
                cells.append(str(int(v)))
            elif key == "model" and bool(r["chosen"]):
                cells.append(f"**{v}**")
            else:
                cells.append(fmt(v))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"**Chosen: trial {chosen['model']}** (summary rank {int(chosen['rank'])}, checkpoint "
                  f"`{chosen['checkpoint']}`, epoch {int(chosen['epoch'])}), chosen on val: {RANKING}, each from the "
                  f"checkpoint's val metrics. The {split} figures are reported, never used to choose.",
              f"- Verdict {chosen['verdict']}: margin {chosen['margin']:+.3f} (PASS >= {V.PASS['margin']:.2f}), "
              f"cos_next {chosen['cos_next']:.3f} (>= {V.PASS['cos_next']:.2f}), cos_anchor "
              f"{chosen['cos_anchor']:.3f} (>= {V.PASS['cos_anchor']:.2f}); on val it was "
              f"{chosen['val_verdict']} (margin {chosen['val_margin']:+.3f}, deployment check "
              f"{'passed' if chosen['val_deploy_ok'] else 'failed'}).",
              f"- Deployment check {'passed' if chosen['deploy_ok'] else 'FAILED'}: R@5 {chosen['r_at_5']:.3f} vs "
              f"DIRECT {chosen['direct_r_at_5']:.3f} + {V.DEPLOY_R5:.2f}; MRR@10 {chosen['mrr_at_10']:.3f} vs DIRECT "
              f"{chosen['direct_mrr_at_10']:.3f} + {V.DEPLOY_MRR:.2f}.",
              f"- Latency on {int(chosen['threads'])} thread(s), {'bf16' if chosen['bf16'] else 'fp32'}: p50 "
              f"{chosen['latency_p50_ms']:.2f} ms, p95 {chosen['latency_p95_ms']:.2f} ms per query at batch 1 "
              f"({LATENCY_RUNS} timed passes after {LATENCY_WARMUP} warm-up); throughput "
              f"{chosen['throughput_qps']:.0f} queries/s at batch {int(chosen['throughput_batch'])}; "
              f"{int(chosen['parameters']):,} parameters."]
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- main
def check_inputs(exp: str, top: int, split: str, data: str | None, threads: int):
    """(experiment, split, data path, whether it is the search's data, the held-out split, the candidates, notes),
    everything checked before anything is evaluated: a bad input is one line."""
    if split not in SPLIT_ALIASES:
        raise InputError("--split", f"{split!r} is not one of {', '.join(SPLIT_ALIASES)}")
    split = SPLIT_ALIASES[split]
    if top < 1:
        raise InputError("--top", f"{top} must be >= 1")
    if threads < 0:
        raise InputError("--threads", f"{threads} must be >= 0")
    stored = Experiment(exp)
    if not stored.exists():
        raise InputError(stored.path, "no such experiment")
    record = stored.record() or {}
    if data is None and not record.get("data"):
        raise InputError(stored.path, f"no data recorded in {RECORD}: pass --data")
    data_path = str(Path(data or record["data"]).expanduser().resolve())
    same_data = not record.get("data") or data_path == str(Path(record["data"]).resolve())
    d: P7Data = load(data_path)
    held = getattr(d, split)
    if held is None:
        have = ", ".join(n for n in ("train", "val", "ood") if getattr(d, n) is not None)
        raise InputError(data_path, f"the data has no '{split}' split (it has {have}); give data with an ood "
                                    "split (an ood file beside train, or a single article store) or --split val")
    candidates, notes = choose_candidates(stored.path, read_summary(stored.path), top)
    for c in candidates:
        c.state = load_state(c.checkpoint)
        try:
            c.cfg = P7Config.from_dict(c.state["config"], source=c.checkpoint)
        except (KeyError, TypeError):
            raise InputError(c.checkpoint, "the checkpoint holds no config") from None
        check_fits(c, held, data_path)
    return stored, split, data_path, same_data, held, candidates, [f"skipped {s}" for s in notes]


def evaluate_candidates(candidates, held, n_threads: int) -> tuple[list[dict], list[dict], dict]:
    """(a row per candidate: held-out metrics beside its val ones, size and speed; DIRECT's and the centroid's row
    per context length; the Evaluator per context length), with ``n_threads`` torch threads."""
    old_threads = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        rows, evaluators, baseline_rows = [], {}, []
        for c in candidates:
            cfg = c.cfg.replace(device="cpu", threads=n_threads)
            k = cfg.context_length
            if k not in evaluators:
                ev = evaluators[k] = Evaluator(held, cfg)
                for name, module in (("DIRECT", CopyLast()), ("centroid", Centroid())):
                    baseline_rows.append({"model": name, "kind": "baseline", "context_length": k,
                                          **ev(module, bf16=False)})
            ev = evaluators[k]
            model = build(c, held.dim)
            bf16 = use_bf16(cfg)
            t0 = time.perf_counter()
            res = ev(model, bf16)
            eval_seconds = time.perf_counter() - t0
            g = torch.Generator().manual_seed(0)
            contexts = ev.st.batch(torch.randint(len(ev.st), (THROUGHPUT_BATCH,), generator=g)).context
            val = {k2: v for k2, v in c.val.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            rows.append({"model": c.trial_id, "kind": "trial", "trial_id": c.trial_id, "rank": c.rank,
                         "checkpoint": c.checkpoint, "epoch": int(c.val.get("epoch", 0)), "arch": cfg.arch,
                         "context_length": k, **res, "val_margin": val.get("margin", math.nan),
                         "val_cos_next": val.get("cos_next", math.nan), "val_r_at_5": val.get("r_at_5", math.nan),
                         "val_mrr_at_10": val.get("mrr_at_10", math.nan), "val_verdict": V.verdict(val),
                         "val_deploy_ok": V.deploy_ok(val), "eval_seconds": eval_seconds,
                         "parameters": sum(p.numel() for p in model.parameters()), "threads": n_threads,
                         "bf16": bf16, **timing(model, contexts, bf16)})
    finally:
        torch.set_num_threads(old_threads)
    return rows, baseline_rows, evaluators


def evaluation_table(rows: list[dict], baseline_rows: list[dict], evaluators: dict, held, split: str
                     ) -> pd.DataFrame:
    """The trials and the references in one table, each with its verdict and deployment check, and ``chosen``
    the model chosen on val (selection.chosen_index)."""
    multi_k = len(evaluators) > 1
    for b in baseline_rows:
        if multi_k and b["model"] != "ridge":
            b["model"] = f"{b['model']} (K={b['context_length']})"
    df = pd.DataFrame(rows + baseline_rows)
    for m in METRICS:
        if m not in df:
            df[m] = math.nan
    df["verdict"] = [V.verdict(r) for r in df.to_dict("records")]
    df["deploy_ok"] = [V.deploy_ok(r) for r in df.to_dict("records")]
    df.insert(1, "split", split)
    df["chosen"] = df.index == chosen_index(df)
    df["windows"] = [len(evaluators[k].st) if k in evaluators else w
                     for k, w in zip(df["context_length"], df.get("windows", pd.Series(math.nan, index=df.index)))]
    df["bank"] = len(held.chunks)
    return df


def export_chosen(export_dir: str, df: pd.DataFrame, candidates, held, split: str, exp: str, data_path: str) -> None:
    """The chosen trial's model, config and held-out figures as a folder that loads without tune_p7's search."""
    best = df.index[df["chosen"]][0]
    chosen = next(c for c in candidates if c.trial_id == df.loc[best, "model"])
    held_out = {k: v for k, v in df.loc[best].items() if k in METRICS or k.startswith(("direct_", "centroid_"))
                or k in ("verdict", "deploy_ok", "windows", "bank", "latency_p50_ms", "latency_p95_ms",
                         "throughput_qps", "throughput_batch", "threads", "bf16")}
    export(export_dir, chosen, held.dim, held_out, split, {"experiment": exp, "data": data_path})
    print(f"exported trial {chosen.trial_id} to {storage.normalize(export_dir)} (model.pt, config.json, "
          "metrics.json, example.py)", flush=True)


def evaluate(exp: str, top: int = 3, split: str = "ood", data: str | None = None, threads: int = 0,
             export_dir: str | None = None, refresh_summary: bool = True) -> pd.DataFrame:
    """Evaluate, write evaluation.parquet/.md (and the export); returns the evaluation table."""
    stored, split, data_path, same_data, held, candidates, notes = check_inputs(exp, top, split, data, threads)
    rows, baseline_rows, evaluators = evaluate_candidates(candidates, held, threads or len(os.sched_getaffinity(0)))
    ridge, note = ridge_from_probe(stored.path, split, same_data)
    notes += [note] if note else []
    if ridge is not None:
        if ridge.get("context_length") not in evaluators:
            notes.append(f"ridge comes from the data probe at context length {ridge.get('context_length')}")
        baseline_rows.append({"model": "ridge", "kind": "baseline", **ridge})
    df = evaluation_table(rows, baseline_rows, evaluators, held, split)

    md = markdown(df, split, stored.path, data_path, notes)
    buf = io.BytesIO()
    df.astype({c: str for c in ("checkpoint", "trial_id") if c in df}).to_parquet(buf, index=False)
    stored.write_evaluation(buf.getvalue(), md)
    print(md)
    print(f"wrote {stored.file(EVALUATION)} and {EVALUATION_MD}", flush=True)
    if export_dir is not None:
        export_chosen(export_dir, df, candidates, held, split, stored.path, data_path)
    if refresh_summary:  # the summary shows the evaluation's section
        from tune_p7.report.summary import summarize

        try:
            summarize(stored.path)
            print(f"refreshed {stored.file(SUMMARY_MD)}", flush=True)
        except InputError as err:
            print(f"warning: summary.md not refreshed: {err}", file=sys.stderr)
    return df


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tune-p7 evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("experiment", help="experiment folder or URI (e.g. ray_results/smoke-20261124-101500, s3://b/exp)")
    p.add_argument("--top", type=int, default=3,
                   help="evaluate the K best-ranked trials that have a checkpoint [default: 3]")
    p.add_argument("--split", default="ood", choices=tuple(SPLIT_ALIASES),
                   help="held-out split: ood (default; test is an alias), or val (the selection split, not held out)")
    p.add_argument("--data", help="data to evaluate on [default: the data recorded with the experiment]")
    p.add_argument("--threads", type=int, default=0, help="torch threads [default: 0 = all CPUs of this process]")
    p.add_argument("--export", metavar="DIR", help="write the chosen model as a self-contained folder here")
    p.add_argument("--no-summary", action="store_true", help="do not refresh summary.md afterwards")
    a = p.parse_args(argv)
    evaluate(a.experiment, a.top, a.split, a.data, a.threads, a.export, refresh_summary=not a.no_summary)
    return 0


if __name__ == "__main__":
    cli.run(main)
