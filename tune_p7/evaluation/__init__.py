"""Evaluation: after a search, choose a model on val, report it on the held-out split and export it.

- ``selection``: which checkpoints are candidates and which one is chosen
- ``evaluate``: ``tune-p7 evaluate``; ``export``: the exported folder (``load_exported``, ``predict``) and its
  ``templates/example.py``

Imports every other stage and tune_p7's shared plumbing. Importing the package imports none of its modules.
"""
__all__ = ["selection", "evaluate", "export"]
