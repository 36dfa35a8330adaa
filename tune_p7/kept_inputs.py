"""The space and data of an experiment, recorded so that ``--resume`` finds them after the driver's machine lost
its temporary files.

A search submitted as a Ray job runs in an uploaded copy of the checkout under the head's
``/tmp/ray/session_*/runtime_resources/working_dir_files/_ray_pkg_*``: the absolute paths it records are gone
once that session is (a head restart, a reboot). So the record also holds each path relative to the checkout
(``space_rel`` / ``data_rel``: a resumed job gets a fresh upload of the same checkout), and the experiment folder
keeps a copy of the space file (``space.yaml``), which a resume uses when neither path exists any more.

``--continue EXP`` (``continued``) finds the same inputs of a finished experiment, and checks that the space and
data given, if any, are the ones it ran (by SHA-256); the continued search itself: tune_p7/tuning/continuation.py.
"""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from tune_p7 import storage
from tune_p7.errors import InputError
from tune_p7.experiment import Experiment
from tune_p7.search_options import REPO


def _rel(path: str) -> str | None:
    p = Path(path).resolve()
    return p.relative_to(REPO).as_posix() if p.is_relative_to(REPO) else None


def keep(exp: str, space_path: str, data_path: str) -> dict:
    """Copy the space file into the experiment; the record's extra fields."""
    text = Path(space_path).read_bytes()
    copy = Experiment(exp).write_space_copy(text)
    return {"space_rel": _rel(space_path), "data_rel": _rel(data_path), "space_copy": copy,
            "space_sha256": hashlib.sha256(text).hexdigest(), "data_sha256": data_sha256(data_path)}


def data_sha256(path: str) -> str:
    """SHA-256 over the data's bytes (a folder: each file's path relative to it, then its bytes, in sorted order):
    what a continued search checks and a tracker shows as the data's fingerprint; "" for a path that is not here."""
    p = Path(path)
    if not p.exists():
        return ""
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]:
        h.update(f.relative_to(p).as_posix().encode() if p.is_dir() else b"")
        with f.open("rb") as src:
            for block in iter(lambda: src.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def surviving(stored: dict, exp: str) -> dict:
    """``stored`` with ``space`` and ``data`` replaced by paths that exist now: the recorded path, else the same
    path relative to this checkout, else (the space) the experiment's copy; a data file found nowhere is an
    InputError naming what was recorded."""
    out = dict(stored)
    for key in ("space", "data"):
        if Path(stored[key]).exists():
            continue
        rel = stored.get(f"{key}_rel")
        if rel and (REPO / rel).exists() and (key == "data" or _same_space(REPO / rel, stored)):
            out[key] = str((REPO / rel).resolve())
        elif key == "space" and (kept := Experiment(exp).space_copy(stored)) is not None:
            folder = Path(tempfile.mkdtemp(prefix="tune_p7_space_"))
            copy = folder / Path(stored[key]).name
            copy.write_bytes(kept)
            out[key] = str(copy)
        else:
            raise InputError(stored[key], f"the experiment's {key} is gone (recorded when it started); put it back "
                                          "at that path to resume")
    return out


def _same_space(path: Path, stored: dict) -> bool:
    want = stored.get("space_sha256")
    return want is None or _sha(path) == want


def continued(opts, root: str) -> dict | None:
    """The experiment ``--continue`` names, checked before anything starts: {path, record (with paths that exist
    now), space (the experiment's copy of its space file)}; None without --continue."""
    given = opts.continue_from
    if not given:
        return None
    flag = "--continue " + given
    if opts.resume:
        raise InputError(flag, "not with --resume (--resume goes on with an interrupted search in its own folder)")
    for name in ("epochs", "seed", "scheduler"):
        if getattr(opts, name) is not None:
            raise InputError("--" + name, "a continued search runs the first's space as it ran (drop --" + name + ")")
    path = storage.normalize(given) if "/" in given or Path(given).exists() else storage.join(root, given)
    first = Experiment(path)
    record = first.record()
    if record is None:
        raise InputError(flag, f"no tune_p7 search at {path}")
    record = surviving(record, path)
    if not first.has_ranked():
        raise InputError(flag, f"the search has not finished (no summary): finish it with --resume --name "
                               f"{path.rsplit('/', 1)[-1]}")
    status = first.ranked()["status"]
    if (status == "unfinished").any():
        raise InputError(flag, f"the search has not finished ({int((status == 'unfinished').sum())} of "
                               f"{len(status)} trials unfinished): finish it with --resume --name "
                               f"{path.rsplit('/', 1)[-1]}")
    if opts.space is not None and _sha(opts.space) != record["space_sha256"]:
        raise InputError("--space " + opts.space, f"differs from the space of {path} (a continued search runs the "
                                                  "first's space: drop --space)")
    data = opts.data or record["data"]
    if record.get("data_sha256") and data_sha256(data) != record["data_sha256"]:
        what = f"--data {opts.data}" if opts.data else record["data"]
        raise InputError(what, f"differs from the data {path} ran on (its SHA-256 changed): a continued search "
                               "runs on the first's data")
    space = record["space"]
    if _sha(space) != record["space_sha256"]:  # edited since: the experiment's own copy is the space it ran
        space = str(Path(tempfile.mkdtemp(prefix="tune_p7_space_")) / Path(space).name)
        Path(space).write_bytes(first.space_copy(record))
    return {"path": path, "record": record, "data": data, "space": space}


def _sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
