"""Train one trial alone, without Ray (from its config): ``python -m tune_p7.train --config FILE --data DATA [--epochs E]``.

FILE is a YAML/JSON mapping of config keys (a trial's ``params.json`` works). Prints one JSON line per epoch.
"""
from __future__ import annotations

import argparse
import json
import sys

from tune_p7 import cli
from tune_p7.core.config import P7Config
from tune_p7.data.loading import load
from tune_p7.space.file import trial_config, trial_schedule


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tune_p7.train", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="YAML or JSON mapping of config keys")
    p.add_argument("--data", required=True, help="article store, NPZ train file or folder")
    p.add_argument("--epochs", type=int, help="override the config's epochs")
    a = p.parse_args(argv)
    raw = cli.read_yaml(a.config)  # JSON is YAML; a trial's params.json works as it is
    values = trial_config(raw)
    if a.epochs is not None:
        values["epochs"] = a.epochs
    cfg = P7Config.from_dict(values, source=a.config)
    data = load(a.data)
    data.check_context(cfg.context_length)
    from tune_p7.core.loop import NonFiniteLoss, fit  # torch import after the cheap checks

    try:
        fit(cfg, data, report=lambda m, _state: print(json.dumps(m), flush=True), schedule=trial_schedule(raw))
    except NonFiniteLoss as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    cli.run(main)
