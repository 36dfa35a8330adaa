"""The confirmation stage: the best configurations of a finished search trained again with new seeds, and scored
on data that no search decision looked at.

After the search, the top ``confirm.top`` distinct configurations of the ranked summary (ranked on val metrics,
never on a held-out split) run again at their full epochs with ``confirm.seeds`` seeds each that the search did not
use, as the trials of a second Tune experiment inside the experiment folder (``EXP/confirm/``: the same trainable,
storage, checkpoints and failure handling; resumed by ``search.py --resume``). A plain FIFO scheduler runs them: no
early stopping, the gates are computed and recorded in every result but not enforced, since a gate would cut a seed
short and bias the mean over seeds. A configuration a population search (PBT / PB2) found is a schedule, not a
point: its confirmation follows the winning trial's hyperparameters epoch by epoch (pbt_history.trained_schedule).

Each seed's last checkpoint holds its per-article sums on val and on the held-out split (``ood``); the driver adds
DIRECT's and ridge's (fitted at each configuration's own context length) on the same windows. ``conclusions``
turns them into intervals over seeds and articles and the recommendation.

Files in the experiment folder: ``confirm.json`` (the settings; once chosen, the plan: configurations, schedules
and seeds), ``confirm.parquet`` (one row per configuration and seed), ``confirm_articles.parquet`` (per-article
sums: every seed, DIRECT and ridge, per split) and the "Confirmed" section of summary.md.
"""
from __future__ import annotations

import io
import itertools
import json

import pandas as pd

from tune_p7 import storage
from tune_p7.core.config import P7Config
from tune_p7.core.ranking import varied
from tune_p7.data.folds import HELDOUT, fold_data
from tune_p7.errors import InputError
from tune_p7.experiment import CONFIRM_FOLDER, PLAN, Experiment
from tune_p7.space.file import CROSSFIT_KEY, RUN_KEY, SCHEDULE_KEY, ConfirmSettings, trial_config

FOLD_SEED = 0  # the cross-fitting folds' permutation of the articles (data/folds.assign)


# ------------------------------------------------------------------------------------------------ settings
def read_plan(exp: str) -> dict | None:
    """The stored settings and, once chosen, the plan; None before."""
    return Experiment(exp).plan()


def settings(exp: str, space: ConfirmSettings, top: int | None, seeds: int | None, resume: bool) -> ConfirmSettings:
    """The confirmation this run does: --confirm-top / --confirm-seeds (``top`` / ``seeds``, None: not given) over
    the space's; on --resume over the experiment's stored settings. Refuses a change once the plan is made."""
    for flag, value, low in (("--confirm-top", top, 0), ("--confirm-seeds", seeds, 1)):
        if value is not None and value < low:
            raise InputError(flag, f"{value} is out of range (must be >= {low})")
    stored = read_plan(exp) if resume else None
    base = ConfirmSettings(stored["top"], stored["seeds"], stored.get("folds", space.folds)) if stored else space
    want = ConfirmSettings(base.top if top is None else top, base.seeds if seeds is None else seeds, base.folds)
    if stored and stored.get("configs") and want != base:
        raise InputError(Experiment(exp).file(PLAN), f"this experiment's confirmation runs top {base.top} x "
                         f"{base.seeds} seeds and has started; resume it without --confirm-top/--confirm-seeds")
    return want


def save(exp: str, conf: ConfirmSettings) -> None:
    """Store the settings with the experiment (a resumed run goes on with them), unless they are stored already."""
    stored = read_plan(exp)
    if stored is None or (stored["top"], stored["seeds"], stored.get("folds")) != (conf.top, conf.seeds, conf.folds):
        _write(exp, {"top": conf.top, "seeds": conf.seeds, "folds": conf.folds})


def _write(exp: str, record: dict) -> None:
    Experiment(exp).write_plan(record)


# ------------------------------------------------------------------------------------------------ the plan
def choose(exp: str, top: int) -> tuple[list[dict], set[int]]:
    """The ``top`` best distinct configurations of the ranked summary (summary.parquet's rank; errored and
    unfinished trials left out; configurations equal but for the seed count once), each as {rank, trial_id,
    config: its non-default keys but the seed, varied: the search's varied keys, schedule: for a population
    search, the hyperparameters the trial's final model was trained with, epoch by epoch}; and every seed the
    search used."""
    from tune_p7.tuning.continuation import chain_trials
    from tune_p7.tuning.pbt_history import HP, trained_schedule
    ranked = Experiment(exp).ranked()
    trials = [t for _, t in chain_trials(exp)]  # a continued search confirms among the trials of its whole chain
    full = {t.trial_id: P7Config.from_dict(trial_config(t.config), source="trial config").to_dict() for t in trials}
    population = any(c.startswith(HP) for c in ranked.columns)
    curves = {t.trial_id: Experiment(exp).trial_results(t.storage.trial_dir_name) for t in trials} if population else {}
    default = P7Config().to_dict()
    shown = [c.removeprefix("config/") for c in varied(ranked)]
    chosen, seen = [], set()
    for r in ranked.itertuples():
        if len(chosen) == top:
            break
        cfg = {k: v for k, v in full[r.trial_id].items() if k != "seed"}
        schedule = [[e, v] for e, v in trained_schedule(curves, r.trial_id)] if population else []
        key = json.dumps([cfg, schedule], sort_keys=True)
        if r.status in ("errored", "unfinished") or key in seen:
            continue
        seen.add(key)
        chosen.append({"rank": int(r.rank), "trial_id": r.trial_id,
                       "config": {k: v for k, v in cfg.items() if v != default[k]},
                       "varied": {k: cfg[k] for k in shown if k != "seed"},
                       **({"schedule": schedule} if len(schedule) > 1 else {})})
    return chosen, {c["seed"] for c in full.values()}


def new_seeds(used: set[int], n: int) -> list[int]:
    """The n smallest non-negative seeds not in ``used``."""
    return list(itertools.islice((s for s in itertools.count() if s not in used), n))


def plan(exp: str, conf: ConfirmSettings) -> dict:
    """The stored plan, or a new one (stored): which configurations, which seeds."""
    stored = read_plan(exp) or {}
    if stored.get("configs"):
        return stored
    configs, used = choose(exp, conf.top)
    record = {"top": conf.top, "seeds": conf.seeds, "folds": conf.folds, "fold_seed": FOLD_SEED,
              "common_context": max((P7Config.from_dict(c["config"]).context_length for c in configs), default=0),
              "seed_values": new_seeds(used, conf.seeds), "configs": configs}
    _write(exp, record)
    return record


def crossfits(record: dict) -> list[dict]:
    """The CROSSFIT_KEY value of each fold's runs (none for a plan made before cross-fitting)."""
    return [{"fold": f, "folds": record["folds"], "seed": record["fold_seed"],
             "common_context": record["common_context"]} for f in range(record.get("folds") or 0)]


def run_config(source: dict) -> dict:
    """The explicit run a planned configuration becomes: its keys and, for a population search, its schedule."""
    return {**source["config"], **({SCHEDULE_KEY: source["schedule"]} if source.get("schedule") else {})}


# ------------------------------------------------------------------------------------------------ the Tune run
def tuner(exp: str, record: dict, data, space, cpus: float, max_concurrent: int, max_failures: int,
          reuse_actors: bool = False):
    """A new Tune experiment at EXP/confirm (every configuration x every seed), or the interrupted one restored.
    Without ``reuse_actors`` each actor's Repr names its one trial (tune_p7.tuning.actors)."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from tune_p7.tuning import actors, algorithms, checkpoint, progress
    from tune_p7.tuning.ending import WatchSignals
    from tune_p7.tuning.trainable import train_trial

    scheduled = tuple(sorted({k for c in record["configs"] for _, changes in c.get("schedule", []) for k in changes}))
    varied = ("seed", "fold", *(k for k, v in space.params.items() if isinstance(v, dict)))  # dashboard and log
    path = Experiment(exp).confirm_folder
    restoring = tune.Tuner.can_restore(path)  # then the stored run's reuse_actors holds: name workers as reused
    trainable = tune.with_resources(actors.describe(tune.with_parameters(train_trial, data=data, gates=space.gates,
                                                                         mutated=scheduled, articles=True), varied,
                                                    reuse_actors or restoring), {"cpu": cpus})
    verbose, shown = progress.tune_output(varied, max(space.values_of("epochs")))
    if restoring:
        return checkpoint.restore_tuner(path, trainable, "confirm")
    return tune.Tuner(
        trainable,
        param_space={"seed": tune.grid_search(record["seed_values"]),
                     RUN_KEY: tune.grid_search([run_config(c) for c in record["configs"]]),
                     **({CROSSFIT_KEY: tune.grid_search(crossfits(record))} if record.get("folds") else {})},
        tune_config=tune.TuneConfig(scheduler=FIFOScheduler(),
                                    max_concurrent_trials=algorithms.max_concurrent(max_concurrent, cpus),
                                    reuse_actors=reuse_actors),
        run_config=tune.RunConfig(
            name=CONFIRM_FOLDER, storage_path=exp,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=space.num_to_keep,
                                                    checkpoint_score_attribute=space.metric,
                                                    checkpoint_score_order=space.mode),
            failure_config=tune.FailureConfig(max_failures=max_failures), callbacks=[WatchSignals(), *shown],
            verbose=verbose))


def _article_rows(tables: dict, pool_ids: dict | None = None, **keys) -> list[dict]:
    """Long-format rows (one per split and article) of loop.article_tables' output, tagged with ``keys``; a
    cross-fitting fold's held-out articles numbered by their index in the pool (``pool_ids``: split -> ids)."""
    rows = []
    for split, t in tables.items():
        cols = {k: v.tolist() for k, v in t.items()}
        if pool_ids and split in pool_ids:
            cols["article"] = [int(pool_ids[split][a]) for a in cols["article"]]
        for i in range(len(cols["article"])):
            rows.append({**keys, "split": split, **{k: v[i] for k, v in cols.items()}})
    return rows


def _seed_tables(path: str, trial_dir: str) -> dict | None:
    """The per-article sums in a confirmation trial's newest checkpoint that holds them (its last epoch's)."""
    import torch

    from tune_p7.tuning import checkpoint
    from tune_p7.tuning.trainable import ARTICLES

    fs, root = storage.filesystem(storage.join(path, trial_dir))
    for folder in reversed(checkpoint.stored(fs, root)):
        try:
            with fs.open_input_stream(f"{folder}/{ARTICLES}") as f:
                return torch.load(io.BytesIO(f.read()), weights_only=True)
        except FileNotFoundError:
            continue
    return None


def fold_of(data, record: dict, fold: int | None):
    """(the data a run of ``fold`` sees, {held-out split: its articles' pool indices}); the data itself and no
    renumbering for a plan made before cross-fitting (``fold`` None)."""
    if fold is None:
        return data, None
    part, ids = fold_data(data, fold, record["folds"], record["fold_seed"])
    return part, {HELDOUT: ids}


def baseline_rows(data, record: dict, ks: dict[int, int]) -> list[dict]:
    """Per-article rows of the reference predictors (core/baselines.references: ridge and the kNN-successor, fitted
    on each fold's training articles at each configuration's context length, chosen on val) with DIRECT beside
    them, on the windows the runs are scored on, for every configuration rank in ``ks``; ``source`` names the
    reference."""
    from tune_p7.core.baselines import references
    from tune_p7.core.loop import model_article_tables, split_evaluators

    rows = []
    for fold in range(record["folds"]) if record.get("folds") else [None]:
        part, ids = fold_of(data, record, fold)
        for k in sorted(set(ks.values())):
            evaluators = split_evaluators(P7Config(context_length=k, precision="fp32"), part,
                                          record.get("common_context"))
            for name, model in references(part.train, part.val, k).items():
                tables = model_article_tables(model, evaluators, False)
                for rank in (r for r, kr in ks.items() if kr == k):
                    rows += _article_rows(tables, ids, config_rank=rank, seed=-1, fold=fold, source=name)
    return rows


def collect(exp: str, record: dict, data) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per configuration, seed and fold: the configuration's search rank and trial, the seed, the fold,
    how the trial ended (completed / errored with ``failure`` "nan" or "worker" / unfinished), the first gate that
    fired and its epoch (recorded, not enforced), the final epoch's val metrics (DIRECT's included) and
    config/<key> for every config key;
    per-article sums: every run's (source "model"), and each reference's at the configuration's context length
    (source "ridge" / "knn", seed -1), each with DIRECT's on the same windows, on val and the held-out articles)."""
    from ray.tune import ExperimentAnalysis

    path = Experiment(exp).confirm_folder
    rows, articles = [], []
    for t in ExperimentAnalysis(path).trials:
        source = next(c for c in record["configs"] if run_config(c) == t.config[RUN_KEY])
        fold = (t.config.get(CROSSFIT_KEY) or {}).get("fold")
        cfg = P7Config.from_dict({**source["config"], "seed": t.config["seed"]}).to_dict()
        results = Experiment(path).trial_results(t.storage.trial_dir_name)
        last = max(reversed(results), key=lambda r: r.get("epoch", 0)) if results else {}
        fired = next((r for r in results if r.get("gate")), {})
        tables = _seed_tables(path, t.storage.trial_dir_name) if last.get("epoch", 0) >= cfg["epochs"] else None
        failure = "nan" if last.get("error") else "worker" if t.status == "ERROR" else None
        status = "errored" if failure else "completed" if tables is not None else "unfinished"
        row = {"config_rank": source["rank"], "source_trial": source["trial_id"], "trial_id": t.trial_id,
               "seed": cfg["seed"], "fold": fold, "status": status, "failure": failure,
               "epoch": int(last.get("epoch", 0)), "gate": fired.get("gate"), "gate_epoch": fired.get("epoch"),
               "error": last.get("error") or (f"trial error, see {CONFIRM_FOLDER}/{t.storage.trial_dir_name}"
                                              if t.status == "ERROR" else None)}
        row.update({k: v for k, v in last.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                    and k not in row})
        row.update({f"config/{k}": v for k, v in cfg.items()})
        rows.append(row)
        if status == "completed":
            articles += _article_rows(tables, fold_of(data, record, fold)[1], config_rank=source["rank"],
                                      seed=cfg["seed"], fold=fold, source="model")
    ks = {c["rank"]: P7Config.from_dict(c["config"]).context_length for c in record["configs"]}
    articles += baseline_rows(data, record, ks)
    table = pd.DataFrame(rows).sort_values(["config_rank", "seed", "fold"]).reset_index(drop=True)
    return table, pd.DataFrame(articles)


def _parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def run(exp: str, conf: ConfirmSettings, data, space, cpus: float, max_concurrent: int = 0,
        max_failures: int = 2, reuse_actors: bool = False) -> pd.DataFrame | None:
    """Run (or resume) the confirmation of the finished, summarized search in ``exp``; write confirm.parquet and
    confirm_articles.parquet (summarizing again then adds the Confirmed section, conclusions.markdown) and return
    the former's rows (a seed ``unfinished``: the run was interrupted). None when there was nothing to confirm."""
    record = plan(exp, conf)
    if not record["configs"]:
        return None
    print(f"tune_p7: confirming the top {len(record['configs'])} configuration(s) with seeds "
          f"{record['seed_values']} in {Experiment(exp).confirm_folder}", flush=True)
    tuner(exp, record, data, space, cpus, max_concurrent, max_failures, reuse_actors).fit()
    table, articles = collect(exp, record, data)
    Experiment(exp).write_confirmed(_parquet(table), _parquet(articles))
    return table
