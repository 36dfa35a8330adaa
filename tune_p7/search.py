"""Run a P7 hyperparameter search with Ray Tune: ``python tune_p7/search.py [options]``.

Validates the search space and the data first (a one-line error and exit code 2, nothing started), loads the
data once and shares it through Ray's object store, runs every grid point as a trial under gated ASHA,
checkpoints every epoch, and writes the ranked summary into the experiment folder.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tune_p7 import cli, connect, job, kept_inputs, preflight, storage
from tune_p7.data.loading import P7Data, load
from tune_p7.errors import InputError
from tune_p7.experiment import RECORD, SUMMARY_HTML, SUMMARY_MD, Experiment
from tune_p7.space.file import ConfirmSettings, Space, load_space
from tune_p7.search_options import DEFAULT_DATA, DEFAULT_SPACE, SearchOptions, parse
from tune_p7.space.search_settings import search_warnings
from tune_p7.space.tracking_settings import TrackingSettings
from tune_p7.space.tracking_settings import resolve as resolve_tracking
from tune_p7.tuning import confirm, continuation
from tune_p7.tuning.algorithms import limited, make_scheduler, max_concurrent, search_algorithm
from tune_p7.tuning.driver import quiet_tune, skip_telemetry_import_of_mlflow


def experiment_uri(opts: SearchOptions, space_path: str) -> tuple[str, str]:
    """(storage, experiment name); for --resume without --name, the newest experiment in local storage."""
    root = storage.normalize(opts.storage)
    if opts.name:
        return root, opts.name
    if not opts.resume:
        return root, f"{Path(space_path).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    if storage.is_uri(root):
        raise InputError("--resume", "give --name of the experiment to resume on " + root)
    found = sorted(Path(root).glob(f"*/{RECORD}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise InputError(root, "no experiment to resume")
    return root, found[-1].parent.name


def refuse_resume_changes(opts: SearchOptions, stored: dict) -> None:
    """--resume goes on with the stored experiment as it started: refuse the options it cannot honour."""
    for flag in ("epochs", "seed", "scheduler"):
        if getattr(opts, flag) is not None:
            raise InputError("--" + flag, "cannot change a stored experiment: --resume goes on with its trials as "
                                          f"they started (drop --{flag})")
    for flag in ("space", "data"):
        given = getattr(opts, flag)
        if given is not None and str(Path(given).resolve()) != stored[flag]:
            raise InputError(f"--{flag} {given}", f"differs from the experiment's {stored[flag]}: --resume goes on "
                                                  f"with the recorded {flag} (drop --{flag})")


def decide_precision(space: Space) -> tuple[Space, dict]:
    """The space with precision 'auto' decided once, here on the driver, and {"requested", "used"} for the record.

    Every trial gets the decision in its config: a trial deciding for itself times bf16 on its own node, so a
    trial restarted on another (or a busier) node could switch precision mid-run.
    """
    def one(values):
        values = sorted(set(values))
        return values[0] if len(values) == 1 else values

    requested = space.values_of("precision")
    if "auto" in requested:
        from tune_p7.core.fastpath import cpu_bf16_is_fast

        # auto means bf16 only on a CPU where it is fast (loop.use_bf16); one decision covers every trial
        cpu_only = set(space.values_of("device")) == {"cpu"}
        space = space.with_precision("bf16" if cpu_only and cpu_bf16_is_fast() else "fp32")
    return space, {"requested": one(requested), "used": one(space.values_of("precision"))}


def samplers(space: Space) -> dict[str, str]:
    """The sampler of every key the space varies (keys of ``runs:`` count as grid), for the summary's axes."""
    out = {k: next(iter(v)) for k, v in space.params.items() if isinstance(v, dict)}
    return {**out, **{k: "grid" for r in space.runs for k in r}}


def probe_data(data, space: Space) -> dict:
    """The data probe (tune_p7.probe) at the space's context length (5 where it has it) with its gates, computed
    once for data, parameters and code (tune_p7.probe_cache)."""
    from tune_p7 import probe_cache

    ks = space.values_of("context_length")
    k, warmup = 5 if 5 in ks else ks[0], max(space.values_of("warmup_epochs"))

    def compute() -> dict:
        from tune_p7.probe import probe

        return probe(data, k, gates=space.gates, warmup_epochs=warmup)

    return probe_cache.cached(data, {"context_length": k, "gates": vars(space.gates), "warmup_epochs": warmup},
                              compute)


def write_probe(result: dict, exp: str) -> None:
    """Store the data probe with the experiment (the summary shows it above the ranked table) and print its
    ``warning:`` lines (the oracle judged by the space's gates and the verdict) on stderr, before any trial starts."""
    from tune_p7.probe import markdown

    Experiment(exp).write_probe(result, markdown(result))
    val = result["splits"]["val"]
    print(f"  probe:     val Delta {val['delta']:+.4f}; ridge margin {val['baselines']['ridge']['margin']:+.3f}, "
          f"DIRECT margin {val['baselines']['direct']['margin']:+.3f}. {result['closing']}", flush=True)
    for line in result["warnings"]:
        print(line, file=sys.stderr, flush=True)


def build_tuner(space: Space, data, opts: SearchOptions, root: str, name: str, prior=(), callbacks=()):
    from ray import tune

    from tune_p7.tuning import actors, checkpoint, progress
    from tune_p7.tuning.ending import WatchSignals
    from tune_p7.tuning.resultlog import KeepLocalResults
    from tune_p7.tuning.trainable import train_trial

    cpus = opts.cpus_per_trial or space.cpus_per_trial
    mutated = tuple(space.scheduler.mutations)
    trainable = tune.with_resources(actors.describe(tune.with_parameters(train_trial, data=data, gates=space.gates,
                                                                         mutated=mutated), samplers(space),
                                                    # resumed: the stored run's reuse_actors holds
                                                    opts.reuse_actors or opts.resume), {"cpu": cpus})
    verbose, shown = progress.tune_output(samplers(space), max(space.values_of("epochs")))
    exp = storage.join(root, name)
    if opts.resume:
        if not tune.Tuner.can_restore(exp):
            raise InputError(exp, "no experiment to resume here (no Tune state found)")
        return checkpoint.restore_tuner(exp, trainable, "resume")  # with its searcher and callbacks
    s = space.scheduler
    search_alg, limit = limited(search_algorithm(space, exp, prior), max_concurrent(opts.max_concurrent, cpus, space))
    return tune.Tuner(
        trainable,
        param_space=space.param_space(),
        tune_config=tune.TuneConfig(scheduler=make_scheduler(space), search_alg=search_alg,
                                    num_samples=space.num_samples, max_concurrent_trials=limit,
                                    reuse_actors=opts.reuse_actors),
        run_config=tune.RunConfig(
            name=name, storage_path=root,
            # a population hands checkpoints between trials and pauses them: pruning by score raced with those
            # hand-overs (a paused PB2 trial found its checkpoint deleted), so PBT / PB2 keep every checkpoint
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None if s.name in ("pbt", "pb2") else space.num_to_keep,
                                                    checkpoint_score_attribute=space.metric,
                                                    checkpoint_score_order=space.mode),
            failure_config=tune.FailureConfig(max_failures=opts.max_failures),
            callbacks=[KeepLocalResults(), WatchSignals(), *shown, *callbacks],
            verbose=verbose),
    )


def interrupted(status, root: str, name: str, what: str = "trials") -> str:
    """The line for a Tune run a signal ended, with how many of its ``what`` are unfinished."""
    n = int((status == "unfinished").sum())
    where = "" if storage.normalize(root) == storage.normalize(SearchOptions.storage) else f" --storage {root}"
    return (f"interrupted: {n} of {len(status)} {what} unfinished; go on with: python tune_p7/search.py --resume "
            f"--name {name}{where}")


def ended(record: dict, stage: str) -> bool:
    """Whether ``stage`` ("search", "confirm") of the experiment ended by itself (not by a signal)."""
    return stage in record.get("ended", {})


def record_end(exp: str, stage: str) -> None:
    """Note in the search record that ``stage`` ended by itself: a resume skips it, and the summary knows that a
    trial stored as PAUSED was ended by its scheduler, not cut short (tune_p7.tuning.ending)."""
    folder = Experiment(exp)
    record = folder.record()
    record.setdefault("ended", {})[stage] = time.strftime("%Y-%m-%d %H:%M:%S")
    folder.write_record(record)


@dataclass
class Plan:
    """What a search runs, every part checked before Ray starts (a bad one is one line, exit 2, nothing written)."""
    root: str  # the storage the experiment folder is in
    name: str  # the experiment's name as given (--name): Tune's name for it, ROOT/NAME its folder
    folder: Experiment
    stored: dict | None  # the record of the experiment --resume goes on with
    before: dict | None  # the finished search --continue continues (kept_inputs.continued)
    space_path: str
    space: Space
    data_path: str
    data: P7Data
    track: TrackingSettings
    confirming: ConfirmSettings
    precision: dict | None = None  # decided once, for the record (decide_precision)
    probe: dict | None = None  # the data probe where the launcher computed it (tune_p7.job), else made at the record


def stored_record(opts: SearchOptions, folder: Experiment) -> dict | None:
    """The record --resume goes on with (its space and data where they are now), or None without --resume."""
    if not opts.resume:
        return None
    stored = folder.record()
    if stored is None:
        raise InputError(folder.path, "no experiment to resume (no tune_p7 search record)")
    stored = kept_inputs.surviving(stored, folder.path)  # a job's uploaded copies are gone after a head restart
    refuse_resume_changes(opts, stored)
    return stored


def finished(opts: SearchOptions, folder: Experiment, stored: dict | None) -> bool:
    """A resume of an experiment whose search ended, and whose confirmation ended or is not asked for."""
    if not (stored and ended(stored, "search")):
        return False
    wanted = confirm.settings(folder.path, load_space(stored["space"]).confirm, opts.confirm_top,
                              opts.confirm_seeds, True)
    return not wanted.top or ended(stored, "confirm")


def plan(opts: SearchOptions, root: str, name: str, folder: Experiment, stored: dict | None) -> Plan:
    """The space, the data, the tracking and the confirmation of this search, each checked."""
    before = kept_inputs.continued(opts, root)  # --continue
    if opts.resume and opts.num_samples is not None:
        raise InputError("--num-samples", "cannot change a stored experiment: --resume goes on with its trials")
    space_path = before["space"] if before else opts.space or (stored["space"] if stored else str(DEFAULT_SPACE))
    space = load_space(space_path).override(epochs=opts.epochs, seed=opts.seed, scheduler=opts.scheduler,
                                            num_samples=opts.num_samples)
    if before:
        continuation.check_space(space, "--continue " + opts.continue_from)
    inherit = bool(before) and Experiment(before["path"]).tracking() is not None  # its MLflow store
    tracked = opts.resume and folder.tracking() is not None  # a resume goes on logging there
    track = resolve_tracking(space.tracking, opts.track or ("mlflow" if tracked else None), opts.track_uri,
                             storage.is_uri(folder.path), inherit or tracked)
    if not opts.resume:
        for line in search_warnings(space.search, space.num_samples):
            print(line, file=sys.stderr, flush=True)
    confirming = confirm.settings(folder.path, space.confirm, opts.confirm_top, opts.confirm_seeds, opts.resume)
    data_path = before["data"] if before else opts.data or (stored["data"] if stored else str(DEFAULT_DATA))
    data = load(data_path)
    for k in sorted(set(space.values_of("context_length"))):
        data.check_context(k)
    return Plan(root, name, folder, stored, before, space_path, space, data_path, data, track, confirming)


def check_cluster(opts: SearchOptions, root: str) -> None:
    """On a cluster: storage every node reaches, and every node able to run this tune_p7 and write it."""
    import ray

    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) > 1 and not (storage.is_shared(root) or opts.storage_is_shared):
        raise InputError("--storage " + root, f"a node-local path on a {len(alive)}-node cluster: use s3://BUCKET/... "
                                              "or a shared filesystem (NFS) mounted on every node "
                                              "(then pass --storage-is-shared if it is not detected)")
    if opts.address and (len(alive) > 1 or storage.is_uri(root) or  # a node's own env, not the driver's
                         alive[0]["NodeID"] != ray.get_runtime_context().get_node_id()):
        preflight.check_nodes(root)  # every node imports this tune_p7 and writes the storage
    preflight.keep_credentials_home()


def record_search(opts: SearchOptions, p: Plan, argv: list[str]) -> None:
    """A new search's record (what a resume, a continuation and the summary read) and its data probe."""
    space = p.space
    p.folder.write_record({
        "space": str(Path(p.space_path).resolve()), "data": str(Path(p.data_path).resolve()),
        "metric": space.metric, "mode": space.mode, "gates": vars(space.gates), "samplers": samplers(space),
        "max_epochs": max(space.values_of("epochs")), "argv": argv, "precision": p.precision,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"), **kept_inputs.keep(p.folder.path, p.space_path, p.data_path),
        **({"continues": p.before["path"]} if p.before else {})})
    if not opts.no_probe:
        write_probe(p.probe or probe_data(p.data, space), p.folder.path)


def announce(p: Plan, dashboard: str) -> None:
    d = p.data
    print(f"tune_p7: experiment {p.name}\n  results:   {p.folder.path}\n"
          f"  dashboard: {(dashboard + connect.token_hint()) if dashboard else '(not available)'}\n"
          f"  data:      {p.data_path} (train {len(d.train.chunks)} chunks, val {len(d.val.chunks)}, dim {d.dim})\n"
          f"  space:     {p.space_path}", flush=True)


def run_search(opts: SearchOptions, p: Plan, handle: dict | None) -> None:
    """Tune's run of the search (a resume goes on with it), unless a resumed search ended already; the end is
    recorded only when the run ended by itself: after Ctrl-C (Tune saves its state and ``fit()`` returns) the
    search is unfinished, and neither a confirmation plan nor a conclusion may rest on it."""
    from tune_p7.tuning import ending

    if p.stored and ended(p.stored, "search"):
        return
    prior = continuation.prior_trials(p.before["path"]) if p.before else ()
    callbacks = ()
    if handle:
        from tune_p7.report import tracking

        callbacks = tracking.callbacks(handle)
    build_tuner(p.space, p.data, opts, p.root, p.name, prior, callbacks).fit()
    if not ending.signalled():
        record_end(p.folder.path, "search")


def run_confirmation(opts: SearchOptions, p: Plan) -> tuple[object, str]:
    """The confirmation of the summarized search, unless the search is unfinished: (its table or None, the
    interruption line or "")."""
    from tune_p7.tuning import ending

    unfinished = ending.signalled() and interrupted(p.folder.ranked()["status"], p.root, p.name)
    confirmed = None
    if p.confirming.top and not unfinished:
        confirmed = confirm.run(p.folder.path, p.confirming, p.data, p.space,
                                opts.cpus_per_trial or p.space.cpus_per_trial, opts.max_concurrent,
                                opts.max_failures, opts.reuse_actors)
        unfinished = confirmed is not None and ending.signalled() and interrupted(confirmed["status"], p.root,
                                                                                  p.name, "confirmation runs")
    if p.confirming.top and not unfinished:
        record_end(p.folder.path, "confirm")
    return confirmed, unfinished


def report(p: Plan, table: str, confirmed, unfinished: str) -> int:
    """The console's last words and the exit code: 130 interrupted, 1 when a trial errored, else 0."""
    if unfinished:
        print(table)
        print(unfinished, file=sys.stderr)
        return 130
    if confirmed is not None:
        from tune_p7.report.conclusions import markdown

        print(markdown(p.folder.path))
    elif p.confirming.top:
        print("Confirmation: no finished configuration to confirm.")
    print(f"summary: {p.folder.file(SUMMARY_MD)}\n         {p.folder.file(SUMMARY_HTML)} (open in a browser)")
    print(table)
    status = p.folder.ranked()["status"]
    errored = int((status == "errored").sum())
    if errored:
        print(f"error: {errored} of {len(status)} trials errored (see summary.md, Errors)", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    job.attach_console()  # in a search its launcher submitted (tune_p7.job): the launcher's stdout and stderr
    opts = parse(argv, prog="python tune_p7/search.py", description=__doc__.splitlines()[0])
    argv = sys.argv[1:] if argv is None else list(argv)
    quiet_tune(opts.verbose)
    root, name = experiment_uri(opts, opts.space or str(DEFAULT_SPACE))
    folder = Experiment.at(root, name)
    stored = stored_record(opts, folder)
    if finished(opts, folder, stored):
        print(f"tune_p7: experiment {name} is finished, nothing to resume (summary: {folder.file(SUMMARY_MD)})")
        return 0
    p = plan(opts, root, name, folder, stored)
    launch = job.launching(opts, name)  # no --address: start Ray here, run the search as a job in it
    p.probe = job.handed_over()  # a launched driver waits for its launcher's probe: it would disturb the timing
    if not opts.resume and not launch:  # before Ray starts: its start-up would disturb the timing
        p.space, p.precision = decide_precision(p.space)
    preflight.check_storage_uri(root)
    storage.check_writable(root)
    connect.check_address(opts.address)
    dashboard = connect.init_ray(opts)
    if launch and dashboard:
        ahead = None if opts.no_probe or opts.resume else (lambda: probe_data(p.data, p.space))
        code = job.launch(name, dashboard, argv, ahead)
        connect.stop_ray()
        return code
    check_cluster(opts, root)
    if not opts.resume:
        record_search(opts, p, argv)
    announce(p, dashboard)
    confirm.save(folder.path, p.confirming)
    handle = None
    if p.track.backend:
        from tune_p7.report import tracking

        handle = tracking.start(folder.path, name, p.track, p.space, folder.record())
    else:
        skip_telemetry_import_of_mlflow()
    run_search(opts, p, handle)

    from tune_p7.report.summary import summarize

    table = summarize(folder.path, draw=not opts.no_plots)
    confirmed, unfinished = run_confirmation(opts, p)
    if confirmed is not None and not unfinished:
        summarize(folder.path, reuse=True)  # again, with the Confirmed section
    if handle:
        tracking.finish(folder.path, handle, finished=not unfinished)
    connect.stop_ray()  # its workers' last lines and exits come now, not after the table
    return report(p, table, confirmed, unfinished)


if __name__ == "__main__":
    cli.run(main)
