"""tune_p7.job's console hand-over between the launcher (this test's process) and a job's driver (a real child
process): the driver's lines reach the launcher's console, and what the launcher computed ahead reaches the driver
exactly, or nothing where it failed, so that the driver computes it itself. The search through Ray's job API is
tests/test_dashboard.py's."""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import run_cli
from tune_p7 import job

DRIVER = """
import json, sys
from tune_p7 import job
job.attach_console()
print("driver: attached", flush=True)
json.dump({"got": job.handed_over(), "again": job.handed_over()}, open(sys.argv[1], "w"))
"""


def fails():
    raise RuntimeError("the launcher could not compute it")


@pytest.fixture
def console(tmp_path, monkeypatch):
    """Run the driver once against a launcher console whose stdout is a file: (what the driver took, the console)."""
    folder = tempfile.mkdtemp(prefix="p7t-", dir="/tmp")  # a unix socket path has at most 107 bytes
    out = tmp_path / "console.txt"

    def run(work=None):
        with open(out, "w") as stdout, open(tmp_path / "err.txt", "w") as stderr:
            monkeypatch.setattr(sys, "stdout", stdout)
            monkeypatch.setattr(sys, "stderr", stderr)
            sock = str(Path(folder) / "console")
            ahead = job._Ahead(work) if work else None
            server = job._Console(sock, ahead)
            server.start()
            if ahead:
                ahead.start()
            took = tmp_path / "took.json"
            done = run_cli("-c", DRIVER, took, env={job.CONSOLE_VAR: sock}, timeout=60)
            monkeypatch.undo()
        assert done.returncode == 0, done.stderr
        return json.loads(took.read_text()), out.read_text()

    yield run
    shutil.rmtree(folder, ignore_errors=True)


def test_what_the_launcher_computed_ahead_reaches_the_driver_once_and_exactly(console):
    result = {"splits": {"val": {"delta": -0.0038, "warnings": ["warning: x"]}}, "closing": "None beats DIRECT.",
              "k": [1, 2.5, None]}
    took, shown = console(lambda: result)
    assert took == {"got": result, "again": None}
    assert "driver: attached" in shown  # the driver's lines still reach the launcher's console


@pytest.mark.parametrize("work", [None, fails], ids=["nothing-ahead", "ahead-failed"])
def test_without_a_result_ahead_the_driver_gets_none_and_computes_it_itself(console, work):
    took, shown = console(work)
    assert took == {"got": None, "again": None}
    assert "driver: attached" in shown


def test_a_driver_without_a_launcher_gets_none():
    assert job.handed_over() is None
