"""The search's progress on a console that is not a terminal (a job's log in the Ray dashboard, a file, a pipe):
one plain line per trial and epoch instead of Tune's box-drawn tables, which a log viewer that collapses runs of
spaces (the dashboard's) turns into misaligned noise. A terminal keeps Tune's tables. Each line ends with the pid of
the worker that ran the epoch: the PID column of the dashboard's Actors page, where a reused worker's actor is named
``tune_p7 worker`` (tune_p7.tuning.actors).

    trial 3f2a1_00001 arch=lstm margin=0.1  epoch 2/4  margin -0.1234  cos_next 0.2345  R@5 0.1500  pid 4242
"""
from __future__ import annotations

import os
import sys
from typing import IO, Iterable

from ray.tune import Callback

from tune_p7.space.file import CROSSFIT_KEY, trial_config


def _value(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _metric(v) -> str:
    return f"{v:+.4f}" if isinstance(v, (int, float)) else "n/a"


def trial_label(trial_id: str, config: dict, varied: Iterable[str]) -> str:
    """``trial ID key=value ...`` with the values of the keys the space varies (an explicit run's keys count, and
    a confirmation run's cross-fitting ``fold``)."""
    flat = {**trial_config(config), **({"fold": config[CROSSFIT_KEY]["fold"]} if config.get(CROSSFIT_KEY) else {})}
    return " ".join([f"trial {trial_id}"] + [f"{k}={_value(flat[k])}" for k in varied if k in flat])


class ProgressLines(Callback):
    """A Tune callback printing one line per reported epoch, and one when a trial ends or errors, on sys.stdout, or
    with ``to_log`` on LOG (a job's log, when its console is a terminal that shows Tune's tables). Looked up at each
    write, and picklable: Tune stores its callbacks with the experiment."""

    def __init__(self, varied: Iterable[str], max_epochs: int, to_log: bool = False):
        self.varied = tuple(varied)
        self.max_epochs = max_epochs
        self.to_log = to_log

    def _print(self, line: str) -> None:
        out = (LOG if self.to_log else None) or sys.stdout
        out.write(line + "\n")
        out.flush()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        epoch = result.get("epoch", result.get("training_iteration"))
        again = "  (resumed: reported again)" if result.get("resumed") else ""
        self._print(f"{trial_label(trial.trial_id, trial.config, self.varied)}  epoch {epoch}/{self.max_epochs}  "
                    f"margin {_metric(result.get('margin'))}  cos_next {_metric(result.get('cos_next'))}  "
                    f"R@5 {_metric(result.get('r_at_5'))}  pid {result.get('pid', '?')}{again}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        self._print(f"{trial_label(trial.trial_id, trial.config, self.varied)}  ended after epoch "
                    f"{last.get('epoch', 0)}/{self.max_epochs}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._print(f"{trial_label(trial.trial_id, trial.config, self.varied)}  errored (see summary.md, Errors)")


# set by tune_p7.job in a search submitted by its launcher, whose sys.stdout (TEE) writes to both:
LOG: IO[str] | None = None  # the job's log
CONSOLE: IO[str] | None = None  # the launcher's stdout
CONSOLE_IS_TTY: bool | None = None
TEE: IO[str] | None = None


class TablesOnConsole(Callback):
    """During a fit, Tune's tables go to the terminal only (its log gets ProgressLines); set back at its end."""

    def setup(self, **info):
        if CONSOLE is not None:
            sys.stdout = CONSOLE

    def on_experiment_end(self, trials, **info):
        if TEE is not None:
            sys.stdout = TEE


def tune_output(varied: Iterable[str], max_epochs: int) -> tuple[int | None, list[Callback]]:
    """(RunConfig's ``verbose``, extra callbacks): Tune's own tables on a terminal (and plain lines in a job's log,
    if there is one beside it), else silence and plain lines."""
    tty = sys.stdout.isatty() if CONSOLE_IS_TTY is None else CONSOLE_IS_TTY
    if not tty:
        # Tune's new output engine prints its start box and paths even at verbose 0; the legacy one, read from this
        # variable at each fit(), prints nothing at verbose 0
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
        return 0, [ProgressLines(varied, max_epochs)]
    return None, [TablesOnConsole(), ProgressLines(varied, max_epochs, to_log=True)] if LOG is not None else []
