"""Report: what a search found, written for a reader.

- ``summary``: the ranked summary of an experiment (``summarize``), with ``plots``, ``report_html`` (summary.html)
  and ``importance`` (what matters)
- ``conclusions``: what the confirmation lets a user conclude (the recommendation)
- ``tracking``: the search as an MLflow parent run

Imports tuning/, space/, core/, data/ and tune_p7's shared plumbing. Importing the package imports none of its
modules.
"""
__all__ = ["summary", "plots", "report_html", "importance", "conclusions", "tracking"]
