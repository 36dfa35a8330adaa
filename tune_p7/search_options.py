"""Search's command-line options as one typed, frozen object: each field's type, default and help in one place.

``parse(argv)`` builds the argparse parser from the fields (``--cpus-per-trial`` from ``cpus_per_trial``), so
``--help`` shows each default once, and checks the ranges. Every function of the search takes ``SearchOptions``.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_type_hints

from tune_p7.errors import InputError

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SPACE = REPO / "search_spaces" / "smoke.yaml"
DEFAULT_DATA = REPO / "data" / "pydocs.parquet"


def opt(default, help: str, choices=None, flag: str | None = None, metavar: str | None = None):
    return field(default=default, metadata={"help": help, "choices": choices, "flag": flag, "metavar": metavar})


@dataclass(frozen=True)
class SearchOptions:
    space: str | None = opt(None, f"search-space YAML file [default: {DEFAULT_SPACE.relative_to(REPO)}; with "
                                  "--resume: the experiment's]")
    data: str | None = opt(None, f"article store (.parquet), NPZ train file or folder "
                                 f"[default: {DEFAULT_DATA.relative_to(REPO)}; with --resume: the experiment's]")
    name: str | None = opt(None, "experiment name [default: <space>-<date>-<time>; with --resume: the newest]")
    storage: str = opt("./ray_results", "results path or URI (s3://..., NFS path)")
    address: str | None = opt(None, "Ray cluster to join (auto, HOST:PORT, ray://...) [default: $RAY_ADDRESS "
                                    "when it names a cluster (not `local`, not the dashboard's http:// URL), as in a "
                                    "`ray job submit` job; else start a local Ray]")
    cpus_per_trial: float | None = opt(None, "CPUs per trial [default: the space's, else 1]")
    max_concurrent: int = opt(0, "trials at once, 0: as many as the cluster's CPUs hold when the search starts "
                                  "(the confirmation's too; BOHB, PBT, PB2: no limit)")
    epochs: int | None = opt(None, "override every trial's epochs (not with --resume)")
    seed: int | None = opt(None, "override every trial's seed (not with --resume)")
    scheduler: str | None = opt(None, "override the space's scheduler (not with --resume)", ("asha", "fifo"))
    resume: bool = opt(False, "resume an interrupted experiment from its checkpoints")
    continue_from: str | None = opt(None, "continue the finished experiment EXP (a name in --storage or a path) with "
                                          "--num-samples more trials of its space and data, as a new experiment that "
                                          "learns from its trials", flag="--continue", metavar="EXP")
    num_samples: int | None = opt(None, "trials to run (with --continue: new trials) [default: the space's "
                                        "num_samples]")
    track: str | None = opt(None, "log the search to a tracker too [default: the space's tracking.backend]",
                            ("mlflow",))
    track_uri: str | None = opt(None, "tracking store: an MLflow server (http://HOST:PORT) or a database URI "
                                      "[default: the space's tracking.uri, else sqlite:///EXPERIMENT/mlflow.db]")
    max_failures: int = opt(2, "retries of a trial after a worker/node failure")
    num_cpus: int | None = opt(None, "CPUs of the local Ray (no --address) [default: all]")
    dashboard_host: str = opt("127.0.0.1", "address the local dashboard listens on; anything but 127.0.0.1 "
                                           "exposes it (see docs/reliability.md)")
    no_probe: bool = opt(False, "skip the data probe (ridge/DIRECT baselines)")
    no_plots: bool = opt(False, "write the summary without its plots (1-1.5 CPU-s less a search; "
                                "`python tune_p7/summarize.py EXPERIMENT` draws them later)")
    storage_is_shared: bool = opt(False, "the local --storage path is mounted on every node (multi-node without "
                                         "NFS detection)")
    confirm_top: int | None = opt(None, "configurations the confirmation stage trains again with new seeds, 0: none "
                                        "[default: the space's confirm.top]")
    confirm_seeds: int | None = opt(None, "new seeds per confirmed configuration [default: the space's "
                                          "confirm.seeds]")
    reuse_actors: bool = opt(True, "run trials one after another in the same worker process, the confirmation's "
                                   "too; each worker's actor on the dashboard names its worker, the job's log each "
                                   "trial with the worker's pid. --no-reuse-actors: a new worker per trial, its actor "
                                   "named for the trial (several CPU-s more per trial: docs/performance.md)")
    verbose: bool = opt(False, "show Ray's and Tune's detail (worker logs, checkpoint and sync messages)")

    def __post_init__(self):
        for flag, low in (("epochs", 1), ("num_cpus", 1), ("max_concurrent", 0), ("max_failures", 0),
                          ("num_samples", 1)):
            v = getattr(self, flag)
            if v is not None and v < low:
                raise InputError("--" + flag.replace("_", "-"), f"{v} is out of range")
        if self.cpus_per_trial is not None and self.cpus_per_trial <= 0:
            raise InputError("--cpus-per-trial", f"{self.cpus_per_trial} must be > 0")


def parser(cls=SearchOptions, **kw) -> argparse.ArgumentParser:
    """An argparse parser with one option per field of ``cls``; a default other than None is shown once."""
    p = argparse.ArgumentParser(**kw)
    types = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint, meta = types[f.name], f.metadata
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        if hint is bool:  # a flag; one that is on by default gets its --no- form
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction if f.default else "store_true",
                           default=f.default, help=meta["help"])
            continue
        shown = "" if f.default is None else f" [default: {f.default}]"
        kind = next(t for t in (int, float, str) if t == hint or t in getattr(hint, "__args__", ()))
        p.add_argument(flag, dest=f.name, type=kind, default=f.default, choices=meta["choices"],
                       metavar=meta["metavar"], help=meta["help"] + shown)
    return p


def parse(argv=None, **kw) -> SearchOptions:
    values = vars(parser(**kw).parse_args(argv))
    env = os.environ.get("RAY_ADDRESS", "").strip()
    # what ray.init() would join; "local" starts one, and an http:// address is the job API's (`ray job ...`)
    if values["address"] is None and env and env != "local" and not env.lower().startswith(("http://", "https://")):
        values["address"] = env
    return SearchOptions(**values)
