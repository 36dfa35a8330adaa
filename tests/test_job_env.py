"""scripts/job_env.py: which data a submitted job uploads with the checkout (checked with Ray's own traversal of
the working directory) and which relative --data it refuses before anything is submitted."""
from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import REPO, run_cli

spec = importlib.util.spec_from_file_location("job_env", REPO / "scripts" / "job_env.py")
job_env = importlib.util.module_from_spec(spec)
spec.loader.exec_module(job_env)
SHIPPED = REPO / "data" / "pydocs.parquet"


def test_without_data_the_shipped_store_is_uploaded_and_other_data_files_are_not():
    excludes = job_env.excludes_for(job_env.data_arg(["--storage", "s3://b/p", "--epochs", "1"]))
    files = job_env.uploaded(excludes)
    assert SHIPPED in files and (REPO / "tune_p7" / "search.py") in files
    assert not [f for f in files if f.suffix in (".parquet", ".npz") and f != SHIPPED]
    assert not [f for f in files if f.is_relative_to(REPO / "ray_results")]


def test_an_absolute_data_path_is_on_the_head_node_and_adds_nothing():
    assert job_env.data_arg(["--data=/srv/p7/x.parquet"]) == "/srv/p7/x.parquet"
    assert job_env.excludes_for("/srv/p7/x.parquet") == job_env.EXCLUDES


@pytest.mark.parametrize("data, problem", [("no/such.parquet", "not found in the repository"),
                                           ("../outside.parquet", "outside the repository")])
def test_a_relative_data_path_that_cannot_be_uploaded_is_one_line_and_exit_2(data, problem):
    r = run_cli(REPO / "scripts" / "job_env.py", "--storage", "s3://b/p", "--data", data, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith(f"error: --data {data}: {problem}") and r.stderr.count("\n") == 1, r.stderr


def test_the_printed_runtime_env_keeps_the_relative_data_in():
    r = run_cli(REPO / "scripts" / "job_env.py", "--data", "data/pydocs.parquet", timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"excludes": job_env.EXCLUDES + ["!/data/pydocs.parquet"]}


def test_a_relative_data_path_the_upload_would_leave_out_is_refused():
    ignored = REPO / "ray_results" / "job_env_test.parquet"  # ray_results/ is excluded and in .gitignore
    ignored.parent.mkdir(exist_ok=True)
    ignored.write_bytes(b"PAR1")
    try:
        with pytest.raises(ValueError, match=r"ray_results/job_env_test\.parquet is left out of the job upload"):
            job_env.excludes_for("ray_results/job_env_test.parquet")
    finally:
        ignored.unlink()
