"""Data: article stores and what is read from them, the first stage of the flow (numpy and pyarrow; torch only in
batches).

- ``store``: the article store (``read_store``, ``write_store``); ``loading``: stores and NPZ files into checked
  splits and windows (``load``, ``P7Data``, ``Split``); ``batches``: a split as tensors, its batches (``SplitTensors``)
- ``synth``, ``build_data``, ``convert``: the ``tune-p7 synth``, ``build-data`` and ``convert`` commands; ``markup``
  and ``chunking``: documents into chunks (pure)

Imports only tune_p7's shared plumbing. Importing the package imports none of its modules.
"""
__all__ = ["store", "loading", "batches", "synth", "build_data", "convert", "markup", "chunking"]
