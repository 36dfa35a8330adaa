"""How a Tune run ended: interrupted by a signal, or by itself.

Trial statuses cannot tell. Tune's SIGINT / SIGUSR1 handler ends the run with its state saved and ``fit()``
returns normally; and a run that ends by itself can leave trials stored as PAUSED: when HyperBandForBOHB stops
the paused trials of a last bracket that never filled, Tune (2.60) sets them TERMINATED in memory but its final
state save skips trials stopped without an actor, so the stored state keeps PAUSED. So the driver records what
happened: ``WatchSignals`` (a Tune callback) wraps the handler Tune installs for the run and notes the signal.
"""
from __future__ import annotations

import signal
import threading

from ray.tune import Callback

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGUSR1") if hasattr(signal, name))
_SIGNALLED = threading.Event()  # process-wide, as signals are; a Callback must pickle (tuner.pkl), an Event cannot


class WatchSignals(Callback):
    """Notes a SIGINT / SIGUSR1 that reaches the driver during ``fit()``, then hands it to Tune's own handler.

    ``setup`` runs after Tune has installed its handler (tune.run), in the driver's main thread."""

    def setup(self, **info) -> None:
        _SIGNALLED.clear()
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            tune_handler = signal.getsignal(sig)
            if callable(tune_handler):
                signal.signal(sig, _noting(tune_handler))


def _noting(handler):
    def note(sig, frame):
        _SIGNALLED.set()
        return handler(sig, frame)

    return note


def signalled() -> bool:
    """Whether the last Tune run of this process with a ``WatchSignals`` was ended by a signal."""
    return _SIGNALLED.is_set()
