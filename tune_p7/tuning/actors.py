"""Trial actors that say which trial they run: the dashboard's Actors page shows each actor's Repr, which Ray takes
from ``repr(actor)`` once, when the actor is created. Tune's function trials all read ``train_trial`` there.

``describe(trainable, varied)`` gives the trainable a mixin (Tune's ``__mixins__`` hook of ``wrap_function``) whose
repr is ``trial <id> key=value ...``. Ray never reads the repr again, so a reused actor would keep its first trial's
name: searches run with ``reuse_actors=False`` unless ``--reuse-actors`` asks for speed over a true Actors page (the
cost, measured in docs/measurements.md, is one worker start per trial: seconds, against trials of minutes).
"""
from __future__ import annotations

from typing import Iterable


def describe(trainable, varied: Iterable[str] = ("seed",)):
    """``trainable`` (a function, as tune.with_parameters returns it) whose actors' Repr names their trial and its
    values of ``varied``. The mixin is made here, on the driver, so that cloudpickle ships ``varied`` with it."""
    keys = tuple(varied)

    class TrialActor:
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            from tune_p7.tuning.progress import trial_label

            # ImplicitFunc's __repr__ returns self._name (its class attribute: the function's name)
            self._name = trial_label(self.trial_id, self.config, keys)

    trainable.__mixins__ = (TrialActor,) + tuple(getattr(trainable, "__mixins__", ()))
    return trainable
