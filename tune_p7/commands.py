"""The ``tune-p7`` command: one subcommand per command module, each module's ``main(argv)``."""
from __future__ import annotations

import importlib
import sys

from tune_p7 import cli
from tune_p7.errors import InputError

COMMANDS = {  # subcommand -> (module whose main(argv) it runs, what it does)
    "search": ("tune_p7.search", "run a hyperparameter search under Ray Tune"),
    "summarize": ("tune_p7.summarize", "write an experiment's ranked summary again"),
    "evaluate": ("tune_p7.evaluation.evaluate", "select the best trial on val, report it on held-out, export it"),
    "probe": ("tune_p7.probe", "measure a data set's forward signal and baselines"),
    "train": ("tune_p7.train", "train one trial alone, without Ray (from its config)"),
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
    cli.run(lambda: dispatch(argv))
