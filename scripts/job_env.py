"""The runtime environment of a search submitted by scripts/cluster_submit.sh: ``python scripts/job_env.py ARGS...``
prints its JSON, or one ``error: --data ...: problem`` line and exits 2.

The repository is the job's working directory. Results and data files are left out of the upload, except the
search's own data when it is a relative path (none given means the shipped data/pydocs.parquet): the driver runs
on the head node in the uploaded copy, so a relative path is only found there if it was uploaded. An absolute
``--data`` is a path on the head node and nothing is added. Whether the data is uploaded is checked with Ray's
own traversal of the working directory (its gitignore-style ``excludes``, .gitignore and .rayignore files).
"""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = "data/pydocs.parquet"  # search.py's default, relative to the repository
EXCLUDES = ["/.git", "/ray_results", "*.parquet", "*.npz"]  # the job needs neither history, results nor data


def data_arg(args: list[str]) -> str:
    """The value of the search's ``--data`` option, or the default."""
    found = DEFAULT_DATA
    for prev, arg in zip([""] + args, args):
        if prev == "--data":
            found = arg
        elif arg.startswith("--data="):
            found = arg.removeprefix("--data=")
    return found


def data_files(path: Path) -> list[Path]:
    """The files a search reads for ``path``: a folder's files, or a file and its split siblings."""
    from tune_p7.data.loading import _siblings

    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return sorted(_siblings(path).values())


def uploaded(excludes: list[str]) -> set[Path]:
    """Every file of the repository that `ray job submit --working-dir .` uploads with these excludes."""
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

    gitignore = os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1"
    files: set[Path] = set()
    quiet = logging.getLogger("job_env")  # Ray logs every ignore file it reads; the real upload says it again
    quiet.disabled = True
    _dir_travel(REPO, [_get_excludes(REPO, excludes)], lambda p: p.is_file() and files.add(p.resolve()),
                include_gitignore=gitignore, logger=quiet)
    return files


def excludes_for(data: str) -> list[str]:
    """The upload's exclude patterns: EXCLUDES, with the files of a relative ``data`` kept in (``!/path``)."""
    if Path(data).is_absolute():
        return EXCLUDES
    path = (REPO / data).resolve()
    if not path.is_relative_to(REPO):
        raise ValueError("outside the repository (a relative path is uploaded with the job; give a path on the "
                         "head node as an absolute path)")
    if not path.exists():
        raise ValueError("not found in the repository (a relative path is uploaded with the job; give a path on "
                         "the head node as an absolute path)")
    files = data_files(path)
    excludes = EXCLUDES + [f"!/{f.relative_to(REPO).as_posix()}" for f in files]
    missing = sorted(set(files) - uploaded(excludes))
    if missing:
        raise ValueError(f"{missing[0].relative_to(REPO)} is left out of the job upload (ray_results/, .gitignore "
                         "or .rayignore); move it, or give a path on the head node as an absolute path")
    return excludes


def main(args: list[str]) -> int:
    data = data_arg(args)
    try:
        excludes = excludes_for(data)
    except ValueError as exc:
        print(f"error: --data {data}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"excludes": excludes}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
