"""A local search as a named Ray job: ``python tune_p7/search.py`` (no ``--address``) starts its local Ray as
before, then submits itself through Ray's Job API to that Ray, so the dashboard's Jobs page lists the search under
the experiment's name with its live log (a driver that is not submitted has no log there).

The console stays the command's own. The launcher (this process) hands its stdout and stderr to the job's driver
over a unix socket (SCM_RIGHTS); the driver writes every line both to its job log and to those descriptors, so
the terminal gets the same two streams as before, unbuffered and in order. Where the console is a terminal it
shows Tune's tables and the log gets plain progress lines (tune_p7.tuning.progress). Ctrl-C in the launcher is sent to
the driver as SIGINT (the interruption a driver in the foreground got), and the launcher exits with the driver's
exit code. ``TUNE_P7_IN_PROCESS=1`` runs the search in the launcher's process instead, as before this module.

While Ray's job supervisor and then the driver start (a few seconds in which one process at a time works), the
launcher computes what the driver would compute first (the data probe) and hands it over on the same socket
(``launch(..., ahead=)``, ``handed_over()``), so that the search's start does not wait for it.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

from tune_p7.errors import one_line

CONSOLE_VAR = "TUNE_P7_CONSOLE"  # the launcher's socket, in the job driver's environment
IN_PROCESS_VAR = "TUNE_P7_IN_PROCESS"
OMP_VAR = "OMP_NUM_THREADS"  # torch reads it at import
SEARCH = Path(__file__).resolve().with_name("search.py")
_JOB_CONFIG_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # ray.init reads the driver's job config (its name) from it
_PRESTART_VAR = "RAY_prestart_worker_first_driver"  # the raylet reads its config from RAY_<name> at start


def launching(opts, name: str) -> bool:
    """True where this process should start the local Ray and submit the search to it; then names this (the
    launcher's) own driver job in the dashboard, which ``ray.init`` reads from the environment."""
    if opts.address or os.environ.get(IN_PROCESS_VAR) == "1" or CONSOLE_VAR in os.environ:
        return False
    os.environ[_JOB_CONFIG_VAR] = json.dumps({"metadata": {"job_name": f"{name} (launcher)"}})
    # Ray starts a worker per CPU for the first driver (this launcher, which runs nothing on them) that the job's
    # supervisor and trials never take: processes importing ray on the cores the job's start needs
    os.environ.setdefault(_PRESTART_VAR, "0")
    _free_agent_port()
    return True


def _free_agent_port() -> None:
    """Make the local Ray's dashboard agent listen on a free port: jobs go through its HTTP server, and the fixed
    default (52365) is taken by any other Ray of the machine (its agent then runs without one: "No available agent
    to submit job"). ``ray.init`` has no parameter for it; the node takes 0 as "any free port"."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read at `import ray`: connect.init_ray's loopback
    from ray._private import parameter

    base = parameter.RayParams
    if getattr(base, "_tune_p7", False):
        return

    class RayParams(base):
        _tune_p7 = True

        def __init__(self, *args, **kwargs):
            kwargs.setdefault("dashboard_agent_listen_port", 0)
            super().__init__(*args, **kwargs)

    parameter.RayParams = RayParams


# ------------------------------------------------------------------------------------------------ the launcher
class _Ahead(threading.Thread):
    """``work()`` computed beside the job's start; ``body``, its JSON, is null where it failed (the driver then
    computes it again and reports what went wrong, as without a launcher)."""

    def __init__(self, work):
        super().__init__(daemon=True)
        self.work = work
        self.body = b"null"

    def run(self) -> None:
        try:
            self.body = json.dumps(self.work()).encode()
        except Exception:  # noqa: BLE001 - the driver's own attempt reports it
            pass


class _Console(threading.Thread):
    """Accepts the driver's connection: reads its pid, sends it this process's stdout and stderr descriptors, then
    ``ahead``'s result (one length-prefixed JSON value, null without one)."""

    def __init__(self, path: str, ahead: _Ahead | None = None):
        super().__init__(daemon=True)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(1)
        self.ahead = ahead
        self.pid: int | None = None

    def run(self) -> None:
        try:
            conn, _ = self.server.accept()
            with conn:
                pid = int(conn.recv(32).decode())
                sys.stdout.flush()
                sys.stderr.flush()
                socket.send_fds(conn, [b"console"], [sys.stdout.fileno(), sys.stderr.fileno()])
                self.pid = pid
                if self.ahead:
                    self.ahead.join()
                body = self.ahead.body if self.ahead else b"null"
                conn.sendall(struct.pack("!Q", len(body)) + body)
        except (OSError, ValueError):
            pass


def _launcher_threads() -> str:
    """The shell words that give the job's driver this process's OpenMP thread count: Ray's job supervisor (an actor
    with no CPU) sets OMP_NUM_THREADS=1, which its driver would inherit and run the probe, the summary and the
    confirmation's reference fits on one core of an otherwise idle machine."""
    threads = os.environ.get(OMP_VAR)
    return f"export {OMP_VAR}={shlex.quote(threads)}" if threads is not None else f"unset {OMP_VAR}"


def wait_for(client, job: str, console: _Console):
    """(the job's final status, how many Ctrl-C came meanwhile); each Ctrl-C goes to the driver as SIGINT, as in
    its terminal (a job whose driver has not started yet is stopped)."""
    interrupts = 0
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even where started ignoring it (as Tune's fit does)
    while True:
        try:
            status = client.get_job_status(job)
            if status.is_terminal():
                return status, interrupts
            time.sleep(0.2)
        except KeyboardInterrupt:
            interrupts += 1
            if console.pid:
                os.kill(console.pid, signal.SIGINT)
            else:
                client.stop_job(job)


def launch(name: str, dashboard: str, argv: list[str], ahead=None) -> int:
    """Submit ``search.py ARGV --name NAME`` to the local Ray's job API, wait for it, return its exit code.
    ``ahead``: a function whose JSON-able result the driver takes with ``handed_over()``, computed here meanwhile."""
    os.environ.pop(_JOB_CONFIG_VAR, None)
    import ray
    from ray.job_submission import JobSubmissionClient

    # the GCS given explicitly: Ray's job supervisor sets RAY_ADDRESS from /tmp/ray/ray_current_cluster or, when
    # that is missing (a ray.init() Ray writes none), from any GCS process of the machine, someone else's included
    gcs = ray.get_runtime_context().gcs_address

    folder = tempfile.mkdtemp(prefix="p7j-", dir="/tmp")  # short: a unix socket path has at most 107 bytes
    sock = os.path.join(folder, "console")
    try:
        work = _Ahead(ahead) if ahead else None
        console = _Console(sock, work)
        console.start()
        args = shlex.join([*argv, "--name", name])
        entrypoint = (f"cd {shlex.quote(os.getcwd())} && {_launcher_threads()} && RAY_ADDRESS={shlex.quote(gcs)} "
                      f"{CONSOLE_VAR}={shlex.quote(sock)} exec {shlex.quote(sys.executable)} {shlex.quote(str(SEARCH))} "
                      f"{args}")
        client = JobSubmissionClient(dashboard)
        deadline = time.monotonic() + 120
        while True:  # a fresh Ray's dashboard refuses jobs until its node's agent has registered
            try:
                job = client.submit_job(entrypoint=entrypoint, metadata={"job_name": name})
                if work:
                    work.start()
                break
            except RuntimeError as exc:
                if "No available agent" not in str(exc) or time.monotonic() > deadline:
                    print(f"error: cannot submit the search to the local Ray's job API ({one_line(exc, 300)}); "
                          f"{IN_PROCESS_VAR}=1 runs it in this process", file=sys.stderr)
                    return 1
                time.sleep(0.5)
        status, interrupts = wait_for(client, job, console)
        info = client.get_job_info(job)
        if console.pid is None:  # it ended before taking the console: its log holds why
            sys.stderr.write(client.get_job_logs(job))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if info.driver_exit_code is not None:
        return info.driver_exit_code
    if interrupts:
        print("interrupted", file=sys.stderr)
        return 130
    print(f"error: the search's job ended {status.value}: {info.message or ''}".strip(), file=sys.stderr)
    return 1


# ------------------------------------------------------------------------------------------------ the job's driver
def _pump(source: int, targets: list[int]) -> None:
    """Copy everything written to ``source`` (a pipe) to each target (a console gone is left alone)."""
    while data := os.read(source, 65536):
        for fd in list(targets):
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            except OSError:
                targets.remove(fd)


_launcher: socket.socket | None = None  # the connection handed_over() reads


def handed_over():
    """In a search submitted by ``launch``: what the launcher computed ahead for it (``launch(ahead=)``), waiting for
    it; None where it computed nothing, failed, or there is no launcher. Read once."""
    global _launcher
    if _launcher is None:
        return None
    conn, _launcher = _launcher, None
    with conn:
        head = conn.recv(8, socket.MSG_WAITALL)
        if len(head) < 8:
            return None
        size, = struct.unpack("!Q", head)
        body = conn.recv(size, socket.MSG_WAITALL) if size else b""
    return json.loads(body) if len(body) == size else None


def attach_console() -> None:
    """In a search submitted by ``launch``: take the launcher's console. File descriptors 1 and 2 become pipes whose
    every byte goes to the job's log (what they were) and to the console, so Python's prints, Ray's and Tune's
    loggers and the C++ core's messages all reach both, as they reached the terminal of a driver run in place."""
    global _launcher
    path = os.environ.pop(CONSOLE_VAR, None)
    if not path:
        return
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # Ray's job supervisor blocks it in its children
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _launcher = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    _launcher.connect(path)
    _launcher.sendall(str(os.getpid()).encode())
    _, fds, _, _ = socket.recv_fds(_launcher, 16, 2)
    if len(fds) < 2:  # the launcher's stdout is not a file descriptor: the log alone
        return
    import atexit

    from tune_p7.tuning import progress

    sys.stdout.flush()
    sys.stderr.flush()
    logs = [os.dup(1), os.dup(2)]
    pumps = []
    for std, log, console in zip((1, 2), logs, fds):
        read, write = os.pipe()
        os.dup2(write, std)
        os.close(write)
        pumps.append(threading.Thread(target=_pump, args=(read, [log, console]), daemon=True))
        pumps[-1].start()
    progress.LOG = open(os.dup(logs[0]), "w", buffering=1)
    progress.CONSOLE = open(os.dup(fds[0]), "w", buffering=1, errors="replace")
    progress.CONSOLE_IS_TTY = os.isatty(fds[0])
    progress.TEE = sys.stdout

    def drain() -> None:  # cli.leave ends with os._exit: the pipes' last bytes must be through before
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(logs[0], 1)  # closes the pipes' write ends: each pump reads to the end, then stops
        os.dup2(logs[1], 2)
        for pump in pumps:
            pump.join(10)

    atexit.register(drain)
