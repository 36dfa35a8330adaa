"""Shared command-line plumbing: bad input ends as one line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import sys
from typing import Callable

import yaml

from tune_p7.errors import InputError


def run(main: Callable[[], int | None]) -> None:
    try:
        code = main()
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def read_yaml(path) -> dict:
    """A YAML mapping from ``path``; a missing file, a YAML error or a non-mapping raise InputError."""
    try:
        with open(path) as f:
            value = yaml.safe_load(f)
    except OSError as exc:
        raise InputError(path, exc.strerror or "cannot read") from None
    except yaml.YAMLError as exc:
        raise InputError(path, "not valid YAML: " + " ".join(str(exc).split())) from None
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise InputError(path, f"expected a mapping of keys, got {type(value).__name__}")
    return value
