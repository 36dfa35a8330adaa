"""The README's first command, watched in the Ray dashboard and in Prometheus as a user would watch it:
`python tune_p7/search.py` (no --address: a local Ray of its own, on loopback; the default space, then its
confirmation stage) run once in the background on a synthetic store, with its own temp folder and token; while it
runs, the dashboard's API (the token as Bearer), a real Prometheus
(Debian's `prometheus`, on 127.0.0.1, scraping the search's Ray node through the service-discovery file Ray writes
into its session folder) and the TCP servers of its processes are read, then the tests check what was seen."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from cluster_harness import TOKEN, http_get, private_env, private_workdir
from conftest import REPO
from local_processes import free_port, listeners_of, listening_hosts, process_tree, spawn, stop, tail
from test_search import assert_clean_console

pytestmark = pytest.mark.ray  # the README's first command, on a local Ray of its own

SEARCH = REPO / "tune_p7" / "search.py"
PROGRESS = re.compile(r"^trial (\w+_\d{5}) arch=\w+ margin=[\d.]+  epoch (\d)/4  margin [+-]\d\.\d{4}  "
                      r"cos_next [+-]\d\.\d{4}  R@5 [+-]\d\.\d{4}  pid (\d+)$", re.M)
NAMED = re.compile(r"trial (\w+_\d{5}) ")  # a Repr naming a trial (a worker that runs only that one)
BOX = re.compile("[\u2500-\u257f]")  # box drawing


def api(url: str, path: str):
    """The dashboard API's answer, or None (not up yet, or shutting down as the search ends)."""
    try:
        status, body = http_get(url + path, TOKEN)
        return json.loads(body) if status == 200 else None
    except (OSError, ValueError):
        return None


def start_prometheus(workdir: Path, sd_file: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    (workdir / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: ray\n    file_sd_configs: [{{files: ['{sd_file}']}}]\n")
    proc = spawn([shutil.which("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
                  f"--storage.tsdb.path={workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                 {"PATH": "/usr/bin:/bin"}, workdir / "prometheus.log")
    return proc, f"http://127.0.0.1:{port}"


def job_driver_env(launcher: int, name: str) -> dict | None:
    """The environment the job's driver started with (``search.py ... --name NAME`` under Ray's job supervisor, not
    the launcher ``launcher``), or None before it runs."""
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) if proc.name.isdigit() else None
            if parent is not None and launcher not in (int(proc.name), parent) and str(SEARCH).encode() in args \
                    and name.encode() in args:  # not the launcher, nor a child of it caught before its exec
                return dict(v.split("=", 1) for v in (proc / "environ").read_bytes().decode().split("\0") if "=" in v)
        except OSError:
            continue
    return None


def promql(url: str, query: str) -> list[dict]:
    try:
        status, body = http_get(f"{url}/api/v1/query?query={urllib.parse.quote(query)}", token=None, timeout=3)
    except OSError:
        return []
    return json.loads(body)["data"]["result"] if status == 200 else []


@pytest.fixture(scope="module")
def watched(strong_store):
    """Run the search; until it ends, read the dashboard's jobs, the job's log, the trial actors and Prometheus.
    Returns what was seen."""
    seen = {"jobs": [], "log": "", "actors": {}, "alive_unnamed": [], "prometheus": [], "prom_error": None,
            "servers": []}
    with private_workdir() as work:
        env = {**private_env(), "RAY_TMPDIR": str(work), "RAY_metrics_report_interval_ms": "500"}
        env.pop("OMP_NUM_THREADS", None)  # the user's default: torch takes every core the process may use
        name = "watched"
        log, err = work / "search.log", work / "search.err"
        with open(log, "wb") as out, open(err, "wb") as errors:  # stdout and stderr apart, as in a terminal
            proc = subprocess.Popen([sys.executable, str(SEARCH), "--num-cpus", "2", "--data", str(strong_store),
                                     "--storage", str(work / "results"), "--name", name], env=env, stdout=out,
                                    stderr=errors, stdin=subprocess.DEVNULL, cwd=REPO, start_new_session=True)
        prom = None
        try:
            started = time.monotonic()
            url = None
            while proc.poll() is None and time.monotonic() - started < 400:
                time.sleep(0.5)
                if url is None:
                    m = re.search(r"dashboard: (http://[\d.]+:\d+)", log.read_text())
                    url = m and m.group(1)
                    if url:  # the dashboard's own socket, and whether it wants the token
                        port = int(url.rsplit(":", 1)[1])
                        seen["dashboard"] = (url, listening_hosts(port), http_get(url + "/api/version", None)[0],
                                             http_get(url + "/api/version", TOKEN)[0])
                    continue
                sd = next(work.glob("ray/session_*/prom_metrics_service_discovery.json"), None)
                if prom is None and sd is not None:
                    if shutil.which("prometheus"):
                        prom = start_prometheus(work, sd)
                    else:
                        seen["prom_error"] = "prometheus is not installed (.ci/run installs Debian's package)"
                seen["jobs"] = api(url, "/api/jobs/") or seen["jobs"]
                job = next((j for j in seen["jobs"] if (j.get("metadata") or {}).get("job_name") == name), None)
                if job and job.get("submission_id"):
                    seen["log"] = (api(url, f"/api/jobs/{job['submission_id']}/logs") or {}).get("logs") or seen["log"]
                seen["driver_env"] = seen.get("driver_env") or job_driver_env(proc.pid, name)
                if not seen["servers"] and list((work / "results" / name).glob("*/result.json")):
                    seen["servers"] = listeners_of(process_tree(proc.pid))  # while trials run
                actors = api(url, "/api/v0/actors?detail=true&limit=1000")
                for a in actors["data"]["result"]["result"] if actors else []:
                    if a["class_name"] == "ImplicitFunc" and a["state"] == "ALIVE":
                        seen["actors"][a["actor_id"]] = (a.get("repr_name") or a.get("name") or "", a.get("pid"))
                if prom is not None:
                    found = promql(prom[1], f'ray_tune_p7_val_margin{{experiment="{name}"}}')
                    if found:
                        seen["prometheus"].append(found)
            proc.wait(120)
            seen["run"] = subprocess.CompletedProcess(proc.args, proc.returncode, log.read_text(), err.read_text())
            seen["output"] = seen["run"].stdout
            seen["code"] = proc.returncode
            seen["results"], seen["search"] = {}, set()  # the search's trials and its confirmation's
            for f in [*(work / "results" / name).glob("*/result.json"),
                      *(work / "results" / name).glob("confirm/*/result.json")]:
                rows = [json.loads(x) for x in f.read_text().splitlines()]
                seen["results"][rows[0]["trial_id"]] = rows
                if f.parent.parent.name == name:
                    seen["search"].add(rows[0]["trial_id"])
            # a Python worker of no job (Ray names its log worker-ID-ffffffff-PID.out) was started and never used
            seen["jobless_workers"] = sorted(p.name for p in work.glob("ray/session_*/logs/worker-*-ffffffff-*.out"))
        finally:
            stop(proc, grace=20)
            if prom is not None:
                stop(prom[0], grace=5)
                seen["prometheus_log"] = tail(work / "prometheus.log", 2000)
    return seen


def test_the_readme_first_command_confirms_and_ends_with_the_ranked_table_and_no_traceback(watched):
    """On a local Ray of its own: trials side by side, a worker each under ASHA, then the confirmation stage; Ray's
    ended workers and late log lines must not reach the console."""
    assert watched["code"] == 0, watched["output"][-3000:] + watched["run"].stderr[-3000:]
    assert "## Confirmed" in watched["output"]
    assert_clean_console(watched["run"])


def test_the_local_search_is_a_job_named_as_the_experiment_with_a_plain_log(watched):
    assert watched["code"] == 0, watched["output"][-3000:]
    submitted = [j for j in watched["jobs"] if j["type"] == "SUBMISSION"]
    assert [(j["metadata"] or {}).get("job_name") for j in submitted] == ["watched"], watched["jobs"]
    # the job's log, as the dashboard shows it: one plain line per trial and epoch, no box drawing
    lines = PROGRESS.findall(watched["log"])
    assert len(lines) >= 4 and not BOX.search(watched["log"]), watched["log"][-3000:]
    assert {t for t, _, _ in lines} <= set(watched["results"]), (lines, list(watched["results"]))
    # the console is the command's own: the same lines, the ranked table last
    assert PROGRESS.search(watched["output"]) and "Traceback" not in watched["output"]
    assert watched["output"].rstrip().splitlines()[-1].startswith("| 4 |"), watched["output"][-2000:]


def test_the_jobs_driver_runs_torch_with_the_launchers_threads(watched):
    """Ray's job supervisor (an actor without a CPU) sets OMP_NUM_THREADS=1 for what it starts; the driver would
    then run the probe, the summary and the reference fits on one thread of an idle machine. It gets the launcher's
    setting (here none: torch's default) instead."""
    assert watched.get("driver_env"), "the job's driver was not seen"
    assert "OMP_NUM_THREADS" not in watched["driver_env"], watched["driver_env"].get("OMP_NUM_THREADS")


def test_the_local_ray_starts_no_worker_that_no_job_uses(watched):
    """Ray starts a worker per CPU for its first driver, the launcher, which runs nothing on them, and the job's
    supervisor and trials take new ones: two processes importing ray while the job starts."""
    assert watched["code"] == 0, watched["output"][-3000:]
    assert watched["jobless_workers"] == []


def test_no_actor_names_a_trial_it_does_not_run_and_each_trial_is_found_by_its_workers_pid(watched):
    """4 trials and then 3 confirmation seeds on 2 CPUs (more trials than workers): by default a worker runs trials
    one after another, and the Actors page, read every half second, never shows a trial's name on an actor that
    runs another one. Each trial's line in the job's log ends with the pid of the worker that ran it, an actor seen
    alive on the Actors page: one step from a trial to its actor, and back."""
    assert watched["code"] == 0, watched["output"][-3000:]
    pids = {t: {r["pid"] for r in rows} for t, rows in watched["results"].items()}
    assert len(set().union(*pids.values())) < len(pids), pids  # workers were reused
    alive = {pid: name for name, pid in watched["actors"].values()}
    for name, pid in watched["actors"].values():
        named = NAMED.match(name)
        ran = {t for t, p in pids.items() if pid in p}
        assert (ran == {named.group(1)}) if named else name == "tune_p7 worker", (name, pid, ran)
    logged = {(t, int(e), int(p)) for t, e, p in PROGRESS.findall(watched["log"])}
    assert {t for t, _, _ in logged} >= watched["search"], (logged, watched["search"])  # each search trial's lines
    for trial, epoch, pid in logged:
        assert any(r["epoch"] == epoch and r["pid"] == pid for r in watched["results"][trial]), (trial, epoch, pid)
        assert pid in alive, (trial, pid, alive)


def test_prometheus_reads_a_running_trials_margin_back(watched):
    if watched["prom_error"]:
        pytest.skip(watched["prom_error"])
    assert watched["prometheus"], watched.get("prometheus_log")
    series = watched["prometheus"][0][0]
    trial, value = series["metric"]["trial_id"], float(series["value"][1])
    margins = [r["margin"] for r in watched["results"][trial]]
    assert any(abs(value - m) < 1e-6 for m in margins), (value, margins)


def test_the_local_search_listens_on_loopback_only(watched):
    """Every TCP server of a plain local search's Ray (GCS, raylet, dashboard, agents, trial workers) listens on
    127.0.0.1 while trials run, and the dashboard wants the token."""
    assert "dashboard" in watched, watched["output"][-3000:]
    url, hosts, without_token, with_token = watched["dashboard"]
    assert url.startswith("http://127.0.0.1:") and hosts == {"127.0.0.1"}, (url, hosts)
    assert (without_token, with_token) == (401, 200)
    servers = watched["servers"]
    assert {"gcs_server", "raylet"} <= {name for _, _, name in servers} and len(servers) >= 8, servers
    assert {host for host, _, _ in servers} == {"127.0.0.1"}, servers
