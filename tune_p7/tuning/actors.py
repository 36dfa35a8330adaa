"""Trial actors whose name on the dashboard is true: the Actors page shows each actor's Repr, which Ray takes from
``repr(actor)`` once, when the actor is created. Tune's function trials all read ``train_trial`` there.

``describe(trainable, varied, reuse)`` gives the trainable a mixin (Tune's ``__mixins__`` hook of ``wrap_function``)
that sets that Repr. A worker that runs one trial (``reuse=False``) is named for it, ``trial <id> key=value ...``.
A reused worker runs trials one after another (the default: a new worker costs several CPU-s before its trial's
first epoch, docs/performance.md) and a fixed Repr cannot follow them, so it is named for what it is,
``tune_p7 worker`` (REUSED), beside its PID on the Actors page; the trial it runs now is in the job's log, each
epoch's line ending with that pid (tune_p7.tuning.progress), and in the gauges' ``trial_id`` label
(tune_p7.tuning.live_metrics).
"""
from __future__ import annotations

from typing import Iterable

REUSED = "tune_p7 worker"  # the Repr of a reused trial worker


def describe(trainable, varied: Iterable[str] = ("seed",), reuse: bool = True):
    """``trainable`` (a function, as tune.with_parameters returns it) whose actors' Repr names their trial and its
    values of ``varied`` (``reuse=False``), or their worker (``reuse``: Tune hands the actor one trial after another).
    The mixin is made here, on the driver, so that cloudpickle ships ``varied`` and ``reuse`` with it."""
    keys = tuple(varied)

    class TrialActor:
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            from tune_p7.tuning.progress import trial_label

            # ImplicitFunc's __repr__ returns self._name (its class attribute: the function's name)
            self._name = REUSED if reuse else trial_label(self.trial_id, self.config, keys)

    trainable.__mixins__ = (TrialActor,) + tuple(getattr(trainable, "__mixins__", ()))
    return trainable
