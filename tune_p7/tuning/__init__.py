"""Tuning: the search under Ray Tune, from a ``Space`` to trained, checkpointed and confirmed trials.

- ``trainable`` (``train_trial``), ``checkpoint``, ``resultlog``: a trial, its checkpoints and its results
- ``algorithms`` (``make_scheduler``, ``search_algorithm``), ``schedulers``, ``searchers``, ``pbt``: how trials are
  chosen and stopped; ``pbt_history``: what a PBT / PB2 trial ran (pure, no Ray)
- ``confirm``: the best configurations again with new seeds, on the held-out split
- ``progress``, ``actors``, ``live_metrics``: what a running search shows; ``replay``, ``replay_cli``: a search
  replayed against a recorded grid (``tune-p7 replay``)

Imports space/, core/, data/ and tune_p7's shared plumbing. Importing the package imports none of its modules (nor
Ray).
"""
__all__ = ["trainable", "checkpoint", "resultlog", "algorithms", "schedulers", "searchers", "pbt", "pbt_history",
           "confirm",
           "progress", "actors", "live_metrics", "replay", "replay_cli"]
