"""Checks a search makes on a Ray cluster before any trial starts, each failure one line (exit 2) that says what
to do, and keeping the driver's storage credentials on the driver.

- ``join(ray, address, ...)``: ``ray.init`` to a cluster with Ray's stderr held back. A driver without
  ``RAY_AUTH_MODE=token`` (or with another token) is refused by the GCS, and Ray's C++ core then prints one
  ``Failed to get cluster ID from GCS server: Unauthenticated`` line per retry (about 20) before a generic
  connection error: here that is one line naming the variable and where the token must be.
- ``check_nodes(storage)``: one remote task pinned to every alive node imports tune_p7 there and compares its
  code with the driver's (a node without the package would otherwise fail every trial placed on it, one retry
  each, while the search exits 0), and for ``s3://`` storage writes and deletes a probe object with that node's
  own environment (trials no longer get the driver's keys, see ``keep_credentials_home``).
- ``keep_credentials_home()``: Tune copies the driver's ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
  session token into every trial actor's runtime env (``ray/tune/execution/class_cache.py``), where the dashboard's
  actor API and every node's runtime_env_agent.log show them. The pickled storage filesystem carries the endpoint
  only when keys come from the environment (pyarrow 26), so dropping the names from Tune's list is enough.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

from tune_p7.errors import InputError, one_line

CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN")
AUTH_SIGNS = ("Unauthenticated", "InvalidAuthToken", "AuthenticationError", "Invalid authentication token")
NODE_TIMEOUT_S = 90  # a probe task needs a worker process on the node: seconds on a loaded machine
STORAGE_VARS = "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION"


def keep_credentials_home() -> None:
    """Trials get no credentials from the driver: each node's trials use that node's environment."""
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE.difference_update(CREDENTIAL_VARS)


def check_storage_uri(root: str) -> None:
    """Keys written into the URI (s3://KEY:SECRET@bucket) would be pickled into every trial: refuse them."""
    if "://" in root and "@" in root.split("://", 1)[1].split("/", 1)[0]:
        raise InputError("--storage", "credentials in the URI would be sent to every trial; export them on each "
                                      f"node instead ({STORAGE_VARS}, see docs/cluster.md)")


# ---------------------------------------------------------------- joining a cluster quietly

def auth_problem() -> str:
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return ("the cluster wants Ray's token: export RAY_AUTH_MODE=token, with the head's token in "
                "RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token (see docs/cluster.md)")
    return ("Ray token authentication failed (InvalidAuthToken): this is not the cluster's token; give the head's "
            "~/.ray/auth_token as RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token (see docs/cluster.md)")


def join(ray, address: str, **kwargs):
    """``ray.init(address=address, **kwargs)``; Ray's own stderr (fd 2, where its C++ core writes) is held back
    and shown again unless the join failed on authentication, which becomes one InputError."""
    sys.stderr.flush()
    saved, held = os.dup(2), tempfile.TemporaryFile()
    os.dup2(held.fileno(), 2)
    error = None
    try:
        return ray.init(address=address, **kwargs)
    except Exception as exc:  # noqa: BLE001 - classified below
        error = exc
        raise
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        held.seek(0)
        text = held.read().decode(errors="replace")
        held.close()
        if error is not None and any(s in text or s in repr(error) for s in AUTH_SIGNS):
            raise InputError("--address " + address, auth_problem()) from None
        sys.stderr.write(text)


# ---------------------------------------------------------------- every node: the package and the storage

def fingerprint(package_dir: str) -> str:
    """A hash of the package's Python files: equal on two nodes when both run the same code."""
    h = hashlib.sha256()
    for path in sorted(Path(package_dir).rglob("*.py")):
        h.update(path.relative_to(package_dir).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def node_probe(storage: str | None) -> dict:
    """Runs on one node (pickled by value: it must work where tune_p7 cannot be imported)."""
    import importlib
    import os as _os
    import uuid

    out = {"package": None, "storage": None}
    try:
        pkg = importlib.import_module("tune_p7")
        pre = importlib.import_module("tune_p7.preflight")
        out["package"] = {"dir": _os.path.dirname(pkg.__file__),
                          "fingerprint": pre.fingerprint(_os.path.dirname(pkg.__file__))}
    except Exception as exc:  # noqa: BLE001 - reported to the driver
        out["package_error"] = f"{type(exc).__name__}: {exc}"
    if storage:
        try:
            import pyarrow.fs as pafs

            endpoint = _os.environ.get("AWS_ENDPOINT_URL")
            fs = pafs.S3FileSystem(endpoint_override=endpoint, connect_timeout=5, request_timeout=10,
                                   region=_os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
                                   retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=2))
            path = storage.split("://", 1)[1].rstrip("/") + f"/.tune_p7_node_probe_{uuid.uuid4().hex}"
            with fs.open_output_stream(path) as f:
                f.write(b"ok")
            fs.delete_file(path)
        except Exception as exc:  # noqa: BLE001 - reported to the driver
            out["storage"] = " ".join(str(exc).split())[:160]
    return out


def node_problems(answer: dict | None, want: str, storage: str | None) -> list[str]:
    if answer is None:
        return [f"did not answer a probe task within {NODE_TIMEOUT_S} s (is its Ray node healthy? see its "
                "raylet.out)"]
    problems = []
    if answer.get("package_error"):
        problems.append(f"cannot import tune_p7 ({answer['package_error'][:120]}): install it there "
                        "(pip install -r requirements.txt in the same checkout) and start its Ray node again")
    elif answer["package"]["fingerprint"] != want:
        problems.append(f"tune_p7 in {answer['package']['dir']} is another version than the driver's (code "
                        f"{answer['package']['fingerprint']} vs {want}): install the driver's checkout there and "
                        "start its Ray node again")
    if answer.get("storage"):
        problems.append(f"cannot write {storage} with its own credentials ({answer['storage']}): export the "
                        f"storage settings ({STORAGE_VARS}) in the environment of its `ray start`")
    return problems


def check_nodes(storage: str) -> None:
    """Every alive node can import the driver's tune_p7 and (s3://) write to ``storage``; else one InputError
    naming the first failing node and what to do."""
    import ray
    import ray.cloudpickle
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    import tune_p7

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the probe must not need tune_p7 there
    want = fingerprint(os.path.dirname(tune_p7.__file__))
    uri = storage if storage.startswith("s3://") else None
    task = ray.remote(num_cpus=0, max_retries=0)(node_probe)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(uri)
            for n in nodes]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=NODE_TIMEOUT_S)
    failing = []
    for node, ref in zip(nodes, refs):
        try:
            answer = ray.get(ref) if ref in ready else None
        except Exception as exc:  # noqa: BLE001 - the task itself failed there
            answer = {"package_error": one_line(exc, 120), "package": None}
        problems = node_problems(answer, want, uri)
        if problems:
            failing.append((node, problems))
    if failing:
        node, problems = failing[0]
        more = f" (and {len(failing) - 1} more node(s))" if len(failing) > 1 else ""
        raise InputError(f"node {node['NodeManagerAddress']} ({node['NodeID'][:8]})", "; ".join(problems) + more)
