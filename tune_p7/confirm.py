"""The confirmation stage: the best configurations of a finished search trained again with new seeds, and what
can be concluded from them with confidence.

After the search, the top ``confirm.top`` distinct configurations of the ranked summary (ranked on val metrics,
never on a held-out split) run again at their full epochs with ``confirm.seeds`` seeds each that the search did not
use, as the trials of a second Tune experiment inside the experiment folder (``EXP/confirm/``: the same trainable,
storage, checkpoints and failure handling; resumed by ``search.py --resume``). A plain FIFO scheduler runs them: no
early stopping, the gates are computed and recorded in every result but not enforced, since a gate would cut a seed
short and bias the mean over seeds.

Files in the experiment folder: ``confirm.json`` (the settings; once chosen, the plan: configurations and seeds),
``confirm.parquet`` (one row per configuration and seed) and the "Confirmed" section of summary.md (``markdown``).
"""
from __future__ import annotations

import io
import itertools
import json
import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from tune_p7 import storage
from tune_p7.config import P7Config
from tune_p7.errors import InputError
from tune_p7.reporting import varied
from tune_p7.space import RUN_KEY, ConfirmSettings, trial_config
from tune_p7.verdicts import DEPLOY_MRR, DEPLOY_R5, PASS, verdict

PLAN_FILE, TABLE_FILE, FOLDER = "confirm.json", "confirm.parquet", "confirm"
METRICS = ("margin", "cos_next", "cos_anchor", "r_at_5", "mrr_at_10")
LEVEL = 0.95
DEPLOY = {"r_at_5": DEPLOY_R5, "mrr_at_10": DEPLOY_MRR}  # metric -> margin over DIRECT the deployment check needs
LABEL = {"margin": "margin", "cos_next": "cos_next", "cos_anchor": "cos_anchor", "r_at_5": "R@5",
         "mrr_at_10": "MRR@10"}


# ------------------------------------------------------------------------------------------------ statistics
def t_interval(x: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, lo, hi): the two-sided ``level`` Student-t interval of the mean of the n values ``x``,

    mean +- t_{n-1, (1 + level) / 2} * s / sqrt(n), s the sample standard deviation (ddof 1).
    n = 1: (x_1, -inf, +inf), one value bounds nothing; n = 0: all NaN. A NaN value makes all three NaN.
    """
    from scipy.stats import t

    v = np.asarray(x, dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if len(v) == 1:
        return mean, (-math.inf if math.isfinite(mean) else math.nan), (math.inf if math.isfinite(mean) else math.nan)
    half = float(t.ppf((1 + level) / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return mean, mean - half, mean + half


def difference(a: Sequence[float], b: Sequence[float] | float, level: float = LEVEL) -> tuple[float, float, float]:
    """t_interval of a_i - b_i. ``b`` per seed (DIRECT on the same val windows): the paired difference, its
    interval from the spread of the per-seed differences; ``b`` a constant (ridge, fitted once): the interval of
    ``a`` shifted by b."""
    return t_interval(np.asarray(a, dtype=float) - np.asarray(b, dtype=float), level)


def robust_pass(lo: Mapping[str, float]) -> bool:
    """The lower bound of every PASS metric clears its threshold: lo[k] >= PASS[k] for margin, cos_next,
    cos_anchor (NaN fails)."""
    return all(lo.get(k, math.nan) >= t for k, t in PASS.items())


def robust_deploy(lo_minus_direct: Mapping[str, float]) -> bool:
    """The lower bounds of R@5 - DIRECT and MRR@10 - DIRECT clear DEPLOY_R5 (0.10) and DEPLOY_MRR (0.05) (NaN
    fails)."""
    return all(lo_minus_direct.get(k, math.nan) >= t for k, t in DEPLOY.items())


# ------------------------------------------------------------------------------------------------ settings
def _read(exp: str) -> dict | None:
    path = storage.join(exp, PLAN_FILE)
    return json.loads(storage.read_bytes(path)) if storage.exists(path) else None


def settings(exp: str, space: ConfirmSettings, top: int | None, seeds: int | None, resume: bool) -> ConfirmSettings:
    """The confirmation this run does: --confirm-top / --confirm-seeds (``top`` / ``seeds``, None: not given) over
    the space's; on --resume over the experiment's stored settings. Refuses a change once the plan is made."""
    for flag, value, low in (("--confirm-top", top, 0), ("--confirm-seeds", seeds, 1)):
        if value is not None and value < low:
            raise InputError(flag, f"{value} is out of range (must be >= {low})")
    stored = _read(exp) if resume else None
    base = ConfirmSettings(stored["top"], stored["seeds"]) if stored else space
    want = ConfirmSettings(base.top if top is None else top, base.seeds if seeds is None else seeds)
    if stored and stored.get("configs") and want != base:
        raise InputError(storage.join(exp, PLAN_FILE), f"this experiment's confirmation runs top {base.top} x "
                         f"{base.seeds} seeds and has started; resume it without --confirm-top/--confirm-seeds")
    return want


def save(exp: str, conf: ConfirmSettings) -> None:
    """Store the settings with the experiment (a resumed run goes on with them), unless they are stored already."""
    stored = _read(exp)
    if stored is None or (stored["top"], stored["seeds"]) != (conf.top, conf.seeds):
        _write(exp, {"top": conf.top, "seeds": conf.seeds})


def _write(exp: str, record: dict) -> None:
    storage.write_bytes(storage.join(exp, PLAN_FILE), json.dumps(record, indent=2).encode())


# ------------------------------------------------------------------------------------------------ the plan
def choose(exp: str, top: int) -> tuple[list[dict], set[int]]:
    """The ``top`` best distinct configurations of the ranked summary (summary.parquet's rank; errored and
    unfinished trials left out; configurations equal but for the seed count once), each as {rank, trial_id,
    config: its non-default keys but the seed, varied: the search's varied keys}; and every seed the search used."""
    from ray.tune import ExperimentAnalysis

    ranked = storage.read_parquet(storage.join(exp, "summary.parquet"))
    full = {t.trial_id: P7Config.from_dict(trial_config(t.config), source="trial config").to_dict()
            for t in ExperimentAnalysis(exp).trials}
    default = P7Config().to_dict()
    shown = [c.removeprefix("config/") for c in varied(ranked)]
    chosen, seen = [], set()
    for r in ranked.itertuples():
        if len(chosen) == top:
            break
        cfg = {k: v for k, v in full[r.trial_id].items() if k != "seed"}
        key = json.dumps(cfg, sort_keys=True)
        if r.status in ("errored", "unfinished") or key in seen:
            continue
        seen.add(key)
        chosen.append({"rank": int(r.rank), "trial_id": r.trial_id,
                       "config": {k: v for k, v in cfg.items() if v != default[k]},
                       "varied": {k: cfg[k] for k in shown if k != "seed"}})
    return chosen, {c["seed"] for c in full.values()}


def new_seeds(used: set[int], n: int) -> list[int]:
    """The n smallest non-negative seeds not in ``used``."""
    return list(itertools.islice((s for s in itertools.count() if s not in used), n))


def plan(exp: str, conf: ConfirmSettings) -> dict:
    """The stored plan, or a new one (stored): which configurations, which seeds."""
    stored = _read(exp) or {}
    if stored.get("configs"):
        return stored
    configs, used = choose(exp, conf.top)
    record = {"top": conf.top, "seeds": conf.seeds, "seed_values": new_seeds(used, conf.seeds), "configs": configs}
    _write(exp, record)
    return record


# ------------------------------------------------------------------------------------------------ the Tune run
def tuner(exp: str, record: dict, data, space, cpus: float, max_concurrent: int, max_failures: int):
    """A new Tune experiment at EXP/confirm (every configuration x every seed), or the interrupted one restored."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from tune_p7 import actors, checkpoint, progress
    from tune_p7.trainable import train_trial

    varied = ("seed", *(k for k, v in space.params.items() if isinstance(v, dict)))  # for the dashboard and log
    trainable = tune.with_resources(actors.describe(tune.with_parameters(train_trial, data=data, gates=space.gates),
                                                    varied), {"cpu": cpus})
    verbose, shown = progress.tune_output(varied, max(space.values_of("epochs")))
    path = storage.join(exp, FOLDER)
    if tune.Tuner.can_restore(path):
        for trial_id, source in checkpoint.restore_deleted(path):
            print(f"  confirm:   trial {trial_id}: Tune's state named a deleted checkpoint, resuming from {source}")
        return tune.Tuner.restore(path, trainable, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space={"seed": tune.grid_search(record["seed_values"]),
                     RUN_KEY: tune.grid_search([c["config"] for c in record["configs"]])},
        tune_config=tune.TuneConfig(scheduler=FIFOScheduler(), max_concurrent_trials=max_concurrent or None,
                                    reuse_actors=actors.REUSE_ACTORS),
        run_config=tune.RunConfig(
            name=FOLDER, storage_path=exp,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=space.num_to_keep,
                                                    checkpoint_score_attribute=space.metric,
                                                    checkpoint_score_order=space.mode),
            failure_config=tune.FailureConfig(max_failures=max_failures), callbacks=shown, verbose=verbose))


def collect(exp: str, record: dict) -> pd.DataFrame:
    """One row per configuration and seed: the configuration's search rank and trial, the seed, how the trial
    ended (completed / errored / unfinished), the first gate that fired and its epoch (recorded, not enforced),
    the final epoch's metrics (DIRECT's included) and config/<key> for every config key."""
    from ray.tune import ExperimentAnalysis

    from tune_p7.resultlog import read_results  # imports Ray's Tune: only where the trials are read

    path = storage.join(exp, FOLDER)
    rows = []
    for t in ExperimentAnalysis(path).trials:
        source = next(c for c in record["configs"] if c["config"] == t.config[RUN_KEY])
        cfg = P7Config.from_dict({**source["config"], "seed": t.config["seed"]}).to_dict()
        results = read_results(path, t.storage.trial_dir_name)
        last = max(reversed(results), key=lambda r: r.get("epoch", 0)) if results else {}
        fired = next((r for r in results if r.get("gate")), {})
        status = ("errored" if last.get("error") or t.status == "ERROR"
                  else "completed" if last.get("epoch", 0) >= cfg["epochs"] else "unfinished")
        row = {"config_rank": source["rank"], "source_trial": source["trial_id"], "trial_id": t.trial_id,
               "seed": cfg["seed"], "status": status, "epoch": int(last.get("epoch", 0)), "gate": fired.get("gate"),
               "gate_epoch": fired.get("epoch"),
               "error": last.get("error") or (f"trial error, see {FOLDER}/{t.storage.trial_dir_name}"
                                              if t.status == "ERROR" else None)}
        row.update({k: v for k, v in last.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                    and k not in row})
        row.update({f"config/{k}": v for k, v in cfg.items()})
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["config_rank", "seed"]).reset_index(drop=True)


def run(exp: str, conf: ConfirmSettings, data, space, cpus: float, max_concurrent: int = 0,
        max_failures: int = 2) -> str:
    """Run (or resume) the confirmation of the finished, summarized search in ``exp``; write confirm.parquet
    (summarizing again then adds the Confirmed section to summary.md); return the Confirmed section."""
    record = plan(exp, conf)
    if not record["configs"]:
        return "Confirmation: no finished configuration to confirm."
    print(f"tune_p7: confirming the top {len(record['configs'])} configuration(s) with seeds "
          f"{record['seed_values']} in {storage.join(exp, FOLDER)}", flush=True)
    tuner(exp, record, data, space, cpus, max_concurrent, max_failures).fit()
    buf = io.BytesIO()
    collect(exp, record).to_parquet(buf, index=False)
    storage.write_bytes(storage.join(exp, TABLE_FILE), buf.getvalue())
    return markdown(exp)


# ------------------------------------------------------------------------------------------------ the table
def aggregate(rows: pd.DataFrame, ridge: Mapping[str, float] | None = None) -> pd.DataFrame:
    """One row per configuration from confirm.parquet's rows, over its completed seeds: n, and for each METRICS
    key its mean with ``<key>_lo`` / ``<key>_hi`` (t_interval); ``<key>_minus_direct`` (paired by seed) and, with
    ``ridge`` (the probe's val ridge metrics), ``<key>_minus_ridge`` for R@5 and MRR@10, with their intervals; the
    verdict of the means, robust_pass, robust_deploy, and how many seeds a gate would have stopped."""
    needed = [*METRICS, *("direct_" + k for k in DEPLOY)]
    rows = rows.assign(**{k: math.nan for k in needed if k not in rows})  # trials that never reported
    out = []
    for rank, g in rows.groupby("config_rank", sort=True):
        done = g[g["status"] == "completed"]
        row = {"config_rank": int(rank), "source_trial": g["source_trial"].iloc[0], "n": len(done), "seeds": len(g),
               "gated": int(done["gate"].notna().sum())}
        for k in METRICS:
            row[k], row[k + "_lo"], row[k + "_hi"] = t_interval(done[k])
        for k in DEPLOY:
            row[f"{k}_minus_direct"], row[f"{k}_minus_direct_lo"], row[f"{k}_minus_direct_hi"] = \
                difference(done[k], done["direct_" + k])
            if ridge is not None:
                row[f"{k}_minus_ridge"], row[f"{k}_minus_ridge_lo"], row[f"{k}_minus_ridge_hi"] = \
                    difference(done[k], ridge[k])
        row["verdict"] = verdict({k: row[k] for k in METRICS})
        row["robust_pass"] = robust_pass({k: row[k + "_lo"] for k in PASS})
        row["robust_deploy"] = robust_deploy({k: row[f"{k}_minus_direct_lo"] for k in DEPLOY})
        if ridge is not None:
            row["beats_ridge"] = all(row[f"{k}_minus_ridge_lo"] > 0 for k in DEPLOY)
        out.append(row)
    return pd.DataFrame(out)


def _iv(row, key: str, signed: bool = False) -> str:
    mean, lo, hi = row[key], row[key + "_lo"], row[key + "_hi"]
    f = "+.3f" if signed else ".3f"
    if not math.isfinite(mean):
        return "nan"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{mean:{f}} [n < 2]"
    return f"{mean:{f}} [{lo:{f}}, {hi:{f}}]"


def _name(row, record: dict) -> str:
    src = next(c for c in record["configs"] if c["rank"] == row["config_rank"])
    cfg = ", ".join(f"{k}={v}" for k, v in src["varied"].items())
    return f"rank {row['config_rank']} ({row['source_trial']}{': ' + cfg if cfg else ''})"


def markdown(exp: str) -> str:
    """The "Confirmed" section of summary.md from confirm.parquet, confirm.json and (for ridge) probe.json."""
    record, probe = _read(exp), _probe(exp)
    ridge = probe["splits"]["val"]["baselines"]["ridge"] if probe else None
    agg = aggregate(storage.read_parquet(storage.join(exp, TABLE_FILE)), ridge)
    diffs = [f"{k}_minus_direct" for k in DEPLOY] + ([f"{k}_minus_ridge" for k in DEPLOY] if ridge else [])
    head = ["configuration", "n", *[LABEL[k] for k in METRICS],
            *[f"{LABEL[k.split('_minus_')[0]]} - {k.split('_minus_')[1]}" for k in diffs],
            "verdict (mean)", "robust_pass", "robust_deploy", "gated"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in agg.iterrows():
        cells = [_name(r, record), f"{r['n']}/{r['seeds']}", *[_iv(r, k) for k in METRICS],
                 *[_iv(r, k, signed=True) for k in diffs], r["verdict"], str(r["robust_pass"]),
                 str(r["robust_deploy"]), f"{r['gated']}/{r['n']}"]
        lines.append("| " + " | ".join(cells) + " |")
    intro = (f"The top {len(record['configs'])} configurations of the ranked table (ranked on val) trained again at "
             f"their full epochs with {len(record['seed_values'])} new seeds each ({record['seed_values']}), without "
             "early stopping. Each cell: the mean over the completed seeds [95% t-interval]; n: completed seeds. "
             "Differences with DIRECT are paired by seed (same val windows); "
             + (f"with ridge (the probe's, context length {probe['context_length']}) against its single value; " if ridge else
                "no ridge (the experiment has no probe.json); ")
             + f"robust_pass: every PASS metric's lower bound clears its threshold ({_thresholds()}); robust_deploy: "
             f"the lower bounds of R@5 - DIRECT and MRR@10 - DIRECT clear +{DEPLOY_R5:.2f} and +{DEPLOY_MRR:.2f}; "
             "gated: seeds a gate would have stopped (recorded, not enforced). The intervals cover the variation "
             "over seeds on these val windows, not the variation over other data.")
    return "\n".join(["## Confirmed", "", intro, "", *lines, "", recommendation(agg, record)])


def _thresholds() -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in PASS.items())


def _probe(exp: str) -> dict | None:
    path = storage.join(exp, "probe.json")
    return json.loads(storage.read_bytes(path)) if storage.exists(path) else None


def recommendation(agg: pd.DataFrame, record: dict) -> str:
    """The closing paragraph: the best confirmed configuration and how sure we are, or that none beats DIRECT
    (or ridge) with confidence. Best: robust_deploy first, then robust_pass, then the margin's lower bound."""
    done = agg[agg["n"] > 0]
    if done.empty:
        return "**No confirmation seed completed: nothing can be concluded.**"
    key = pd.DataFrame({"d": ~done["robust_deploy"], "p": ~done["robust_pass"],
                        "m": -done["margin_lo"].fillna(-math.inf)})
    best = done.loc[key.sort_values(["d", "p", "m"], kind="stable").index[0]]
    how = (f"over {best['n']} seeds: margin {_iv(best, 'margin', True)}, R@5 - DIRECT "
           f"{_iv(best, 'r_at_5_minus_direct', True)}, MRR@10 - DIRECT {_iv(best, 'mrr_at_10_minus_direct', True)}")
    name = _name(best, record)
    direct_lo = min(best["r_at_5_minus_direct_lo"], best["mrr_at_10_minus_direct_lo"])
    if best["robust_deploy"]:
        text = (f"**Recommendation: {name}.** It beats DIRECT by the deployment margins with 95% confidence "
                f"({how}).")
    elif direct_lo > 0:
        text = (f"**No configuration beats DIRECT by the deployment margins with confidence.** The best, {name}, "
                f"beats DIRECT with 95% confidence but not by +{DEPLOY_R5:.2f} / +{DEPLOY_MRR:.2f} ({how}).")
    else:
        text = (f"**No configuration beats DIRECT with confidence.** The best confirmed, {name}: {how}.")
    text += (" It PASSes robustly (every PASS metric's lower bound clears its threshold)." if best["robust_pass"]
             else f" Its verdict of the mean is {best['verdict']}, and it does not PASS robustly.")
    if "beats_ridge" in done:
        winners = done[done["beats_ridge"]]
        if winners.empty:
            text += (" **No configuration beats ridge with confidence** (none has both its R@5 and its MRR@10 lower "
                     "bound above ridge's).")
        else:
            w = winners.iloc[0] if best["config_rank"] not in set(winners["config_rank"]) else best
            who = "It" if w is best else _name(w, record)
            text += (f" {who} beats ridge with 95% confidence: R@5 - ridge "
                     f"{_iv(w, 'r_at_5_minus_ridge', True)}, MRR@10 - ridge {_iv(w, 'mrr_at_10_minus_ridge', True)}.")
    return text
