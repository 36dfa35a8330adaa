"""The ``tune-p7`` command and shared command-line plumbing: bad input ends as one line on stderr and exit code 2,
never a traceback."""
from __future__ import annotations

import atexit
import importlib
import os
import sys
from typing import Callable

import yaml

from tune_p7.errors import InputError


COMMANDS = {  # subcommand -> (module whose main(argv) it runs, what it does)
    "search": ("tune_p7.search", "run a hyperparameter search under Ray Tune"),
    "summarize": ("tune_p7.summarize", "write an experiment's ranked summary again"),
    "evaluate": ("tune_p7.evaluation.evaluate", "select the best trial on val, report it on held-out, export it"),
    "probe": ("tune_p7.report.probe", "measure a data set's forward signal and baselines"),
    "train": ("tune_p7.train", "replay one trial without Ray"),
    "replay": ("tune_p7.tuning.replay_cli", "replay a search section against a finished full grid, in simulated time"),
    "synth": ("tune_p7.data.synth", "write a synthetic article store"),
    "build-data": ("tune_p7.data.build_data", "chunk and embed documents into an article store"),
    "convert": ("tune_p7.data.convert", "convert between NPZ files and article stores"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return ("usage: tune-p7 COMMAND [options]   (tune-p7 COMMAND --help: that command's options)\n\ncommands:\n"
            + "\n".join(lines))


def dispatch(argv=None) -> int | None:
    """``tune-p7 COMMAND ARGS``: runs COMMAND's module ``main(ARGS)``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        raise InputError("tune-p7 " + argv[0], "unknown command; one of " + ", ".join(COMMANDS))
    return importlib.import_module(COMMANDS[argv[0]][0]).main(argv[1:])


def main(argv=None) -> None:
    """The console script ``tune-p7`` ([project.scripts] in pyproject.toml)."""
    run(lambda: dispatch(argv))


def run(main: Callable[[], int | None]) -> None:
    try:
        code = main()
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        leave(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    leave(code or 0)


def leave(code: int) -> None:
    """Exit with ``code`` after the atexit handlers (Ray's shutdown, logging, temporary files) but without the
    interpreter's teardown: Arrow's thread pools (pyarrow's, Ray's) can abort a finished command there (SIGABRT,
    exit -6, after its last line; apache/arrow#50482 and #45017): twice in about 200 searches of the test suite."""
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def read_yaml(path) -> dict:
    """A YAML mapping from ``path``; a missing file, a YAML error or a non-mapping raise InputError."""
    try:
        with open(path) as f:
            value = yaml.safe_load(f)
    except OSError as exc:
        raise InputError(path, exc.strerror or "cannot read") from None
    except yaml.YAMLError as exc:
        raise InputError(path, "not valid YAML: " + " ".join(str(exc).split())) from None
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise InputError(path, f"expected a mapping of keys, got {type(value).__name__}")
    return value
