"""Command-line plumbing every command uses: bad input ends as one line on stderr and exit code 2, never a traceback
(``run``), and YAML files read with the same one-line errors. The ``tune-p7`` command's table is tune_p7/commands.py."""
from __future__ import annotations

import atexit
import os
import sys
from typing import Callable

import yaml

from tune_p7.errors import InputError


def run(main: Callable[[], int | None]) -> None:
    try:
        code = main()
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        leave(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    leave(code or 0)


def leave(code: int) -> None:
    """Exit with ``code`` after the atexit handlers (Ray's shutdown, logging, temporary files) but without the
    interpreter's teardown: Arrow's thread pools (pyarrow's, Ray's) can abort a finished command there (SIGABRT,
    exit -6, after its last line; apache/arrow#50482 and #45017): twice in about 200 searches of the test suite."""
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


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
