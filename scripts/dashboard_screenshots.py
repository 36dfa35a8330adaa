"""Screenshots of the Ray dashboard during a local search, for docs/cluster.md: ``python scripts/dashboard_screenshots.py``.

Runs the README's first command (the default space on the shipped data) in the background with its own Ray temp
folder and token, opens each useful dashboard page in headless chromium (Debian's chromium + chromium-driver,
driven by selenium) with the token typed into the dashboard's dialog, once trials are running,
and writes docs/dashboard_<page>.png. With Debian's prometheus installed it also shows a trial's live margin in
Prometheus' graph page (docs/dashboard_prometheus.png). Not a test: it takes a few minutes and depends on how the
pages look. Everything listens on 127.0.0.1; the processes it started are ended by their ids.

Install selenium in a virtual environment that sees the project's packages, not beside them: it brings trio,
whose hypothesis plugin entry point breaks pytest (AttributeError at the end of every run)::

    python -m venv --system-site-packages /tmp/shots && /tmp/shots/bin/pip install selenium
    /tmp/shots/bin/python scripts/dashboard_screenshots.py
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
PAGES = {  # file name -> dashboard route
    "jobs": "#/jobs",
    "job": None,  # the search's own job page (its log), found at run time
    "actors": "#/actors",
    "cluster": "#/cluster",
    "overview": "#/overview",
}


def wait(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    raise SystemExit(f"timed out waiting for {what}")


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=REPO, start_new_session=True)


def end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)  # the search: as Ctrl-C; it shuts its Ray down
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1600,1500"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts)


def login(driver, token: str) -> None:
    """Type the token into the dashboard's dialog and submit it, as a user does (it sets the token's cookie)."""
    from selenium.webdriver.common.by import By

    def dialog_field():
        fields = driver.find_elements(By.CSS_SELECTOR, "[role=dialog] input")
        return next((f for f in fields if f.is_displayed() and f.is_enabled()), None)

    wait(dialog_field, 90, "the token dialog").send_keys(token)
    next(b for b in driver.find_elements(By.CSS_SELECTOR, "[role=dialog] button")
         if b.text.strip().upper() == "SUBMIT").click()
    time.sleep(3)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="p7shots-", dir="/tmp"))
    token = secrets.token_hex(32)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, "RAY_TMPDIR": str(work),
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_metrics_report_interval_ms": "1000",
           "PYTHONUNBUFFERED": "1"}
    name = "smoke-dashboard"
    search = start([sys.executable, str(REPO / "tune_p7" / "search.py"), "--storage", str(work / "results"),
                    "--name", name], env, work / "search.log")
    prom = driver = None
    try:
        url = wait(lambda: (m := re.search(r"dashboard: (http://127\.0\.0\.1:\d+)", (work / "search.log").read_text()))
                   and m.group(1), 240, "the dashboard URL")
        if shutil.which("prometheus"):  # from the start: its graph then covers the whole search
            sd = wait(lambda: next(work.glob("ray/session_*/prom_metrics_service_discovery.json"), None), 120,
                      "Ray's service-discovery file")
            (work / "prometheus.yml").write_text("global: {scrape_interval: 1s}\nscrape_configs:\n  - job_name: ray\n"
                                                 f"    file_sd_configs: [{{files: ['{sd}']}}]\n")
            prom = start(["prometheus", f"--config.file={work / 'prometheus.yml'}",
                          f"--storage.tsdb.path={work / 'tsdb'}", "--web.listen-address=127.0.0.1:19090"],
                         {"PATH": "/usr/bin:/bin"}, work / "prometheus.log")
        wait(lambda: len(list((work / "results" / name).glob("*/result.json"))) >= 2, 300, "two running trials")
        driver = browser()
        driver.get(url)
        login(driver, token)
        for page, route in PAGES.items():
            if route is None:
                import json
                import urllib.request

                req = urllib.request.Request(url + "/api/jobs/", headers={"Authorization": f"Bearer {token}"})
                jobs = json.load(urllib.request.urlopen(req))
                job = next(j for j in jobs if (j.get("metadata") or {}).get("job_name") == name)
                route = f"#/jobs/{job['submission_id']}"
            driver.get(f"{url}/{route}")
            time.sleep(6)  # the pages poll every few seconds
            driver.save_screenshot(str(DOCS / f"dashboard_{page}.png"))
            print("wrote", DOCS / f"dashboard_{page}.png")
        if prom is not None:  # once the search stage is over (the confirmation starts): every trial's curve
            wait(lambda: (work / "results" / name / "confirm").exists() or search.poll() is not None, 600,
                 "the end of the search stage")
            query = urllib.parse.quote(f'ray_tune_p7_val_margin{{experiment="{name}"}}')
            driver.get(f"http://127.0.0.1:19090/graph?g0.expr={query}&g0.tab=0&g0.range_input=3m")
            time.sleep(5)
            driver.save_screenshot(str(DOCS / "dashboard_prometheus.png"))
            print("wrote", DOCS / "dashboard_prometheus.png")
    finally:
        if driver is not None:
            driver.quit()
        if prom is not None:
            prom.terminate()
            prom.wait(30)
        end(search)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
