"""Space: what a search is asked to do, read and checked before anything starts.

- ``file``: a search-space YAML file into a validated ``Space`` (``load_space``, ``trial_config``)
- ``values``, ``search_settings``, ``scheduler_settings``, ``tracking_settings``: its values and its ``search:``,
  ``scheduler:`` and ``tracking:`` sections

Imports core/, data/ and tune_p7's shared plumbing. Importing the package imports none of its modules.
"""
__all__ = ["file", "values", "search_settings", "scheduler_settings", "tracking_settings"]
