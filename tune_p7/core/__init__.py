"""Core: the model and its training, everything that is numbers and tensors (no Ray).

- ``config`` (``P7Config``), ``model`` (``build_model``), ``fastpath``, ``losses``, ``metrics``, ``intervals``
- ``loop``: the training loop and the evaluator (``fit``, ``Evaluator``)
- ``verdicts`` (PASS / MARGINAL / FAIL, the deployment check), ``gates`` (``Gates``, ``gate``), ``ranking`` (the one
  ranking key of trials and checkpoints, the tables' number format), ``baselines`` (ridge, the kNN-successor, the oracle)

Imports data/ and tune_p7's shared plumbing. Importing the package imports none of its modules (nor torch).
"""
__all__ = ["config", "model", "fastpath", "losses", "metrics", "intervals", "loop", "verdicts", "gates", "ranking",
           "baselines"]
