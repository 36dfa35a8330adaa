"""tune_p7: a Ray Tune hyperparameter search for the P7 directional ranker.

The subpackages follow the data flow, each importing only those before it: data -> core -> space -> tuning ->
report -> evaluation. At the top: the commands (search.py with search_options.py, probe.py, summarize.py, train.py
and commands.py's ``tune-p7``), the search's driver (connect.py, job.py, preflight.py, kept_inputs.py) and the
plumbing every stage shares (errors.py, storage.py, experiment.py, cli.py). tests/test_layout.py holds the order.
"""
