"""``tracking:`` of a search space and the search's ``--track`` / ``--track-uri``: where a search is logged besides
its experiment folder (tune_p7/report/tracking.py does the logging).

    tracking: {backend: mlflow, uri: http://127.0.0.1:5000, experiment: tune_p7}

``uri`` defaults to a SQLite file in the experiment folder (``mlflow.db``, MLflow's own default store since 3.x);
``experiment`` is the MLflow experiment that holds one parent run per search. The flags win over the file.
"""
from __future__ import annotations

import urllib.request
from dataclasses import dataclass, fields, replace

from tune_p7.errors import InputError

BACKENDS = ("mlflow",)
EXTRA = "pip install -r requirements-tracking.txt (or pip install .[tracking])"


@dataclass(frozen=True)
class TrackingSettings:
    backend: str | None = None  # None: no tracking
    uri: str | None = None  # None: sqlite:///EXP/mlflow.db
    experiment: str = "tune_p7"


def read_tracking(src, raw) -> TrackingSettings:
    """The validated ``tracking:`` mapping of space file ``src`` (not yet checked for an installed backend)."""
    values = raw.get("tracking") or {}
    if not isinstance(values, dict):
        raise InputError(src, "'tracking' must be a mapping")
    known = [f.name for f in fields(TrackingSettings)]
    for key, value in values.items():
        if key not in known:
            raise InputError(src, f"unknown key 'tracking.{key}' (known: {', '.join(known)})")
        if not isinstance(value, str) or not value:
            raise InputError(src, f"key 'tracking.{key}': expected a non-empty string, got {value!r}")
    if values.get("backend", BACKENDS[0]) not in BACKENDS:
        raise InputError(src, f"key 'tracking.backend': expected one of {', '.join(BACKENDS)}, got "
                              f"{values['backend']!r}")
    if values and "backend" not in values:
        raise InputError(src, "key 'tracking': give tracking.backend (mlflow)")
    return TrackingSettings(**values)


def resolve(settings: TrackingSettings, track: str | None, track_uri: str | None, remote_storage: bool = False,
            inherited: bool = False) -> TrackingSettings:
    """The space's settings with ``--track`` / ``--track-uri`` over them, checked before anything starts: the
    backend is installed, a server URI answers, a URI has a backend, and an ``s3://`` experiment folder (which
    cannot hold the default SQLite file) has a URI, unless ``inherited`` (a continued search's store)."""
    out = replace(settings, backend=track or settings.backend, uri=track_uri or settings.uri)
    if out.uri and not out.backend:
        raise InputError("--track-uri " + out.uri, "needs --track mlflow (or tracking.backend in the space file)")
    if not out.backend:
        return out
    flag = "--track mlflow" if track else f"tracking.backend {out.backend}"
    try:
        import mlflow  # noqa: F401 - what the search imports next; a broken install fails here too
    except ImportError:
        raise InputError(flag, f"mlflow is not installed: {EXTRA}") from None
    if remote_storage and not out.uri and not inherited:
        raise InputError(flag, "the experiment folder is not local, so it cannot hold MLflow's SQLite file: give "
                               "--track-uri (an MLflow server, see docs/cluster.md)")
    if out.uri and out.uri.startswith(("http://", "https://")):
        try:  # MLflow's own client retries an unreachable server for minutes
            urllib.request.urlopen(out.uri.rstrip("/") + "/health", timeout=10).close()
        except (OSError, ValueError) as exc:
            raise InputError("--track-uri " + out.uri, f"the MLflow server does not answer ({exc})") from None
    return out
