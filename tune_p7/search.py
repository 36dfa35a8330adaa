"""Run a P7 hyperparameter search with Ray Tune: ``python tune_p7/search.py [options]``.

Validates the search space and the data first (a one-line error and exit code 2, nothing started), loads the
data once and shares it through Ray's object store, runs every grid point as a trial under gated ASHA,
checkpoints every epoch, and writes the ranked summary into the experiment folder.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from tune_p7 import cli, job, kept_inputs, preflight, storage
from tune_p7.core.ranking import SEARCH_FILE
from tune_p7.data.loading import load
from tune_p7.errors import InputError, one_line
from tune_p7.space.file import Space, load_space
from tune_p7.space.options import DEFAULT_DATA, DEFAULT_SPACE, SearchOptions, parse
from tune_p7.space.search_settings import search_warnings
from tune_p7.space.tracking_settings import resolve as resolve_tracking
from tune_p7.tuning import confirm, continuation
from tune_p7.tuning.algorithms import make_scheduler, search_algorithm


def experiment_uri(opts: SearchOptions, space_path: str) -> tuple[str, str]:
    """(storage, experiment name); for --resume without --name, the newest experiment in local storage."""
    root = storage.normalize(opts.storage)
    if opts.name:
        return root, opts.name
    if not opts.resume:
        return root, f"{Path(space_path).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    if storage.is_uri(root):
        raise InputError("--resume", "give --name of the experiment to resume on " + root)
    found = sorted(Path(root).glob(f"*/{SEARCH_FILE}"), key=lambda p: p.stat().st_mtime)
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


def check_address(address: str | None) -> None:
    """Fail fast on an unreachable HOST:PORT instead of waiting on Ray's connection timeout."""
    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise InputError("--address " + address, f"cannot reach the Ray cluster ({exc})") from None


LOCAL_ONLY_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def init_ray(opts: SearchOptions) -> str:
    """Start a local Ray (dashboard on --dashboard-host) or join --address; returns the dashboard URL.

    A local Ray is kept on loopback: with clusters enabled (Linux's default) Ray 2.60 advertises the machine's
    address and its gRPC servers (GCS, raylet, workers, agents) listen on 0.0.0.0. With ``LOCAL_ONLY_VAR=0``
    (read once, at ``import ray``) the node's address is 127.0.0.1 and every server binds 127.0.0.1 only; no other
    node can join, which is what a local search wants. The variable reaches the Ray processes through the
    environment they inherit.
    """
    if not opts.address:
        os.environ.setdefault(LOCAL_ONLY_VAR, "0")
    import ray

    if opts.dashboard_host not in ("127.0.0.1", "localhost"):
        print(f"WARNING: the Ray dashboard will listen on {opts.dashboard_host}. Anyone who reaches it (or the job "
              "API on the same port) can run code on this machine (CVE-2023-48022). Prefer an SSH tunnel.",
              file=sys.stderr)
    try:
        if opts.address:
            ctx = preflight.join(ray, opts.address, log_to_driver=opts.verbose)  # auth failure: one line
        else:  # address="local": never join a stale cluster named in /tmp/ray
            ctx = ray.init(address="local", num_cpus=opts.num_cpus, include_dashboard=True,
                           dashboard_host=opts.dashboard_host, log_to_driver=opts.verbose)
    except InputError:
        raise
    except ray.exceptions.AuthenticationError as exc:
        raise InputError("--address " + str(opts.address),
                         f"Ray token authentication failed ({one_line(exc)}); give the "
                         "cluster's token as RAY_AUTH_TOKEN (with RAY_AUTH_MODE=token) or in ~/.ray/auth_token, "
                         "see docs/cluster.md") from None
    except Exception as exc:  # noqa: BLE001 - a loaded machine's start-up timeout is a plain Exception
        if not isinstance(exc, (ConnectionError, RuntimeError, ValueError)) and "timed out" not in str(exc):
            raise
        raise InputError("--address " + str(opts.address), f"cannot start or join Ray "
                                                           f"({one_line(exc, 300)})") from None
    if not opts.address and ctx.address_info["node_ip_address"] != "127.0.0.1":
        print(f"WARNING: Ray's ports listen on all interfaces (node address {ctx.address_info['node_ip_address']}): "
              f"{LOCAL_ONLY_VAR} was not 0 when ray was imported", file=sys.stderr)
    url = ctx.dashboard_url or ""
    return url if not url or url.startswith("http") else "http://" + url


def token_hint() -> str:
    """Where the dashboard's token is, when Ray's token authentication is on (the dashboard then asks for it)."""
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    if not is_token_auth_enabled():
        return ""
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or "~/.ray/auth_token"
    where = "RAY_AUTH_TOKEN" if os.environ.get("RAY_AUTH_TOKEN") else path
    return f" (asks for a token: `ray get-auth-token` prints it; it is in {where})"


def samplers(space: Space) -> dict[str, str]:
    """The sampler of every key the space varies (keys of ``runs:`` count as grid), for the summary's axes."""
    out = {k: next(iter(v)) for k, v in space.params.items() if isinstance(v, dict)}
    return {**out, **{k: "grid" for r in space.runs for k in r}}


def write_probe(data, space: Space, exp: str) -> None:
    """Store the data probe with the experiment (the summary shows it above the ranked table) and print its
    ``warning:`` lines (the oracle judged by the space's gates and the verdict) on stderr, before any trial starts."""
    from tune_p7.report.probe import markdown, probe

    ks = space.values_of("context_length")
    result = probe(data, 5 if 5 in ks else ks[0], gates=space.gates,
                   warmup_epochs=max(space.values_of("warmup_epochs")))
    storage.write_bytes(storage.join(exp, "probe.json"), json.dumps(result, indent=2).encode())
    storage.write_bytes(storage.join(exp, "probe.md"), markdown(result).encode())
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
    return tune.Tuner(
        trainable,
        param_space=space.param_space(),
        tune_config=tune.TuneConfig(scheduler=make_scheduler(space), search_alg=search_algorithm(space, exp, prior),
                                    num_samples=space.num_samples,
                                    max_concurrent_trials=opts.max_concurrent or None,
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
    path = storage.join(exp, SEARCH_FILE)
    record = json.loads(storage.read_bytes(path))
    record.setdefault("ended", {})[stage] = time.strftime("%Y-%m-%d %H:%M:%S")
    storage.write_bytes(path, json.dumps(record, indent=2).encode())


def main(argv=None) -> int:
    job.attach_console()  # in a search its launcher submitted (tune_p7.job): the launcher's stdout and stderr
    opts = parse(argv, prog="python tune_p7/search.py", description=__doc__.splitlines()[0])
    if not opts.verbose:  # Tune's warnings about slow experiment-state saves: slow storage is not the user's error
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        # restoring a killed experiment, Tune lists every trial killed before its first result as "Failed to fetch
        # metrics" (it has none yet and simply starts): not the user's error either
        logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")
    root, name = experiment_uri(opts, opts.space or str(DEFAULT_SPACE))
    exp = storage.join(root, name)
    stored = None
    if opts.resume:
        if not storage.exists(storage.join(exp, SEARCH_FILE)):
            raise InputError(exp, "no experiment to resume (no tune_p7 search record)")
        stored = json.loads(storage.read_bytes(storage.join(exp, SEARCH_FILE)))
        stored = kept_inputs.surviving(stored, exp)  # a job's uploaded copies are gone after a head restart
        refuse_resume_changes(opts, stored)
        if ended(stored, "search"):  # finished: unless this resume asks for a confirmation not yet made
            wanted = confirm.settings(exp, load_space(stored["space"]).confirm, opts.confirm_top,
                                      opts.confirm_seeds, True)
            if not wanted.top or ended(stored, "confirm"):
                print(f"tune_p7: experiment {name} is finished, nothing to resume (summary: "
                      f"{storage.join(exp, 'summary.md')})")
                return 0
    before = kept_inputs.continued(opts, root)  # --continue: the finished search this one continues
    if opts.resume and opts.num_samples is not None:
        raise InputError("--num-samples", "cannot change a stored experiment: --resume goes on with its trials")
    space_path = before["space"] if before else opts.space or (stored["space"] if stored else str(DEFAULT_SPACE))
    space = load_space(space_path).override(epochs=opts.epochs, seed=opts.seed, scheduler=opts.scheduler,
                                            num_samples=opts.num_samples)
    if before:
        continuation.check_space(space, "--continue " + opts.continue_from)
    inherit = bool(before) and storage.exists(storage.join(before["path"], "tracking.json"))  # its MLflow store
    tracked = opts.resume and storage.exists(storage.join(exp, "tracking.json"))  # a resume goes on logging there
    track = resolve_tracking(space.tracking, opts.track or ("mlflow" if tracked else None), opts.track_uri,
                             storage.is_uri(root), inherit or tracked)
    if not opts.resume:
        for line in search_warnings(space.search, space.num_samples):
            print(line, file=sys.stderr, flush=True)
    confirming = confirm.settings(exp, space.confirm, opts.confirm_top, opts.confirm_seeds, opts.resume)
    data_path = before["data"] if before else opts.data or (stored["data"] if stored else str(DEFAULT_DATA))
    data = load(data_path)
    for k in sorted(set(space.values_of("context_length"))):
        data.check_context(k)
    launch = job.launching(opts, name)  # no --address: start Ray here, run the search as a job in it
    if not opts.resume and not launch:  # before Ray starts: its start-up would disturb the timing
        space, precision = decide_precision(space)
    preflight.check_storage_uri(root)
    storage.check_writable(root)
    check_address(opts.address)
    dashboard = init_ray(opts)
    if launch and dashboard:
        return job.launch(name, dashboard, sys.argv[1:] if argv is None else list(argv))
    import ray

    from tune_p7.tuning import ending

    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) > 1 and not (storage.is_shared(root) or opts.storage_is_shared):
        raise InputError("--storage " + root, f"a node-local path on a {len(alive)}-node cluster: use s3://BUCKET/... "
                                              "or a shared filesystem (NFS) mounted on every node "
                                              "(then pass --storage-is-shared if it is not detected)")
    if opts.address and (len(alive) > 1 or storage.is_uri(root) or  # a node's own env, not the driver's
                         alive[0]["NodeID"] != ray.get_runtime_context().get_node_id()):
        preflight.check_nodes(root)  # every node imports this tune_p7 and writes the storage
    preflight.keep_credentials_home()
    if not opts.resume:
        record = {"space": str(Path(space_path).resolve()), "data": str(Path(data_path).resolve()),
                  "metric": space.metric, "mode": space.mode, "gates": vars(space.gates), "samplers": samplers(space),
                  "max_epochs": max(space.values_of("epochs")), "argv": sys.argv[1:] if argv is None else list(argv),
                  "precision": precision,
                  "created": time.strftime("%Y-%m-%d %H:%M:%S"), **kept_inputs.keep(exp, space_path, data_path),
                  **({"continues": before["path"]} if before else {})}
        storage.write_bytes(storage.join(exp, SEARCH_FILE), json.dumps(record, indent=2).encode())
        if not opts.no_probe:
            write_probe(data, space, exp)
    print(f"tune_p7: experiment {name}\n  results:   {exp}\n  dashboard: {(dashboard + token_hint()) if dashboard else '(not available)'}\n"
          f"  data:      {data_path} (train {len(data.train.chunks)} chunks, val {len(data.val.chunks)}, dim {data.dim})\n"
          f"  space:     {space_path}", flush=True)
    confirm.save(exp, confirming)
    handle = None
    if track.backend:
        from tune_p7.report import tracking

        handle = tracking.start(exp, name, track, space,
                                json.loads(storage.read_bytes(storage.join(exp, SEARCH_FILE))))
    if not (stored and ended(stored, "search")):  # a resume after the search ended goes on with the confirmation
        prior = continuation.prior_trials(before["path"]) if before else ()
        build_tuner(space, data, opts, root, name, prior, tracking.callbacks(handle) if handle else ()).fit()
        # Ctrl-C ends Tune's run with its state saved and fit() returns: the search is then unfinished, and
        # neither a confirmation plan nor a conclusion may rest on it
        if not ending.signalled():
            record_end(exp, "search")
    from tune_p7.report.summary import summarize

    table = summarize(exp)
    unfinished = ending.signalled() and interrupted(
        storage.read_parquet(storage.join(exp, "summary.parquet"))["status"], root, name)
    confirmed = None
    if confirming.top and not unfinished:
        confirmed = confirm.run(exp, confirming, data, space, opts.cpus_per_trial or space.cpus_per_trial,
                                opts.max_concurrent, opts.max_failures, opts.reuse_actors)
        unfinished = confirmed is not None and ending.signalled() and interrupted(confirmed["status"], root, name,
                                                                                  "confirmation runs")
        if confirmed is not None and not unfinished:
            summarize(exp, draw=False)  # again, with the Confirmed section
    if confirming.top and not unfinished:
        record_end(exp, "confirm")
    if handle:
        tracking.finish(exp, handle, finished=not unfinished)
    ray.shutdown()  # its workers' last lines and exits come now, not after the table
    if unfinished:
        print(table)
        print(unfinished, file=sys.stderr)
        return 130
    if confirmed is not None:
        from tune_p7.report.conclusions import markdown

        print(markdown(exp))
    elif confirming.top:
        print("Confirmation: no finished configuration to confirm.")
    print(f"summary: {storage.join(exp, 'summary.md')}\n         {storage.join(exp, 'summary.html')} (open in a browser)")
    print(table)
    status = storage.read_parquet(storage.join(exp, "summary.parquet"))["status"]
    errored = int((status == "errored").sum())
    if errored:
        print(f"error: {errored} of {len(status)} trials errored (see summary.md, Errors)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    cli.run(main)
