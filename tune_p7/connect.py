"""The search's Ray: start a local one (on loopback, with the dashboard) or join ``--address``, each failure one
line; and where the dashboard's token is. tune_p7/search.py calls ``init_ray`` once its inputs are checked."""
from __future__ import annotations

import os
import socket
import sys

from tune_p7 import preflight
from tune_p7.errors import InputError, one_line
from tune_p7.search_options import SearchOptions


def check_address(address: str | None) -> None:
    """Fail fast on an unreachable HOST:PORT instead of waiting on Ray's connection timeout."""
    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise InputError("--address " + address, f"cannot reach the Ray cluster ({exc})") from None


LOCAL_ONLY_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def init_ray(opts: SearchOptions) -> str:
    """Start a local Ray (dashboard on --dashboard-host) or join --address; returns the dashboard URL.

    A local Ray is kept on loopback: with clusters enabled (Linux's default) Ray 2.60 advertises the machine's
    address and its gRPC servers (GCS, raylet, workers, agents) listen on 0.0.0.0. With ``LOCAL_ONLY_VAR=0``
    (read once, at ``import ray``) the node's address is 127.0.0.1 and every server binds 127.0.0.1 only; no other
    node can join, which is what a local search wants. The variable reaches the Ray processes through the
    environment they inherit.
    """
    if not opts.address:
        os.environ.setdefault(LOCAL_ONLY_VAR, "0")
    import ray

    if opts.dashboard_host not in ("127.0.0.1", "localhost"):
        print(f"WARNING: the Ray dashboard will listen on {opts.dashboard_host}. Anyone who reaches it (or the job "
              "API on the same port) can run code on this machine (CVE-2023-48022). Prefer an SSH tunnel.",
              file=sys.stderr)
    try:
        if opts.address:
            ctx = preflight.join(ray, opts.address, log_to_driver=opts.verbose)  # auth failure: one line
        else:  # address="local": never join a stale cluster named in /tmp/ray
            ctx = ray.init(address="local", num_cpus=opts.num_cpus, include_dashboard=True,
                           dashboard_host=opts.dashboard_host, log_to_driver=opts.verbose)
    except InputError:
        raise
    except ray.exceptions.AuthenticationError as exc:
        raise InputError("--address " + str(opts.address),
                         f"Ray token authentication failed ({one_line(exc)}); give the "
                         "cluster's token as RAY_AUTH_TOKEN (with RAY_AUTH_MODE=token) or in ~/.ray/auth_token, "
                         "see docs/cluster.md") from None
    except Exception as exc:  # noqa: BLE001 - a loaded machine's start-up timeout is a plain Exception
        if not isinstance(exc, (ConnectionError, RuntimeError, ValueError)) and "timed out" not in str(exc):
            raise
        raise InputError("--address " + str(opts.address), f"cannot start or join Ray "
                                                           f"({one_line(exc, 300)})") from None
    if not opts.address and ctx.address_info["node_ip_address"] != "127.0.0.1":
        print(f"WARNING: Ray's ports listen on all interfaces (node address {ctx.address_info['node_ip_address']}): "
              f"{LOCAL_ONLY_VAR} was not 0 when ray was imported", file=sys.stderr)
    url = ctx.dashboard_url or ""
    return url if not url or url.startswith("http") else "http://" + url


def stop_ray() -> None:
    """Leave Ray, stopping the local Ray this process started. Ray stops its GCS before the autoscaler's monitor,
    whose SIGTERM handler then reports its own end to the stopped GCS until its one-second grace runs out: a local
    node's monitor (nothing to scale) is killed first."""
    import ray
    from ray._private import worker

    node = worker._global_node
    if node is not None and node.is_head():
        node.kill_monitor(check_alive=False)
    ray.shutdown()


def token_hint() -> str:
    """Where the dashboard's token is, when Ray's token authentication is on (the dashboard then asks for it)."""
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    if not is_token_auth_enabled():
        return ""
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or "~/.ray/auth_token"
    where = "RAY_AUTH_TOKEN" if os.environ.get("RAY_AUTH_TOKEN") else path
    return f" (asks for a token: `ray get-auth-token` prints it; it is in {where})"
