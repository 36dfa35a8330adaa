"""What a search records so that --resume finds its space and data after the driver's temporary files are gone
(tune_p7/kept_inputs.py; the head-restart case itself is tests/test_cluster.py's), and the preflight helpers that
need no cluster."""
from __future__ import annotations

import pytest

from tune_p7 import kept_inputs, preflight
from tune_p7.errors import InputError
from tune_p7.search_options import REPO

SMOKE = REPO / "search_spaces" / "smoke.yaml"


def test_a_gone_space_is_found_in_the_checkout_then_in_the_experiments_copy(tmp_path):
    job = tmp_path / "job_copy"  # stands for the job's uploaded checkout under /tmp/ray
    (job / "search_spaces").mkdir(parents=True)
    space = job / "search_spaces" / "mine.yaml"
    space.write_text(SMOKE.read_text())
    exp = str(tmp_path / "exp")
    record = {"space": str(space), "data": str(REPO / "data" / "pydocs.parquet"),
              **kept_inputs.keep(exp, str(space), str(REPO / "data" / "pydocs.parquet"))}
    assert record["space_rel"] is None and record["data_rel"] == "data/pydocs.parquet"
    assert kept_inputs.surviving(record, exp) == record  # both paths still exist
    space.unlink()  # the session folder is gone
    got = kept_inputs.surviving(record, exp)
    assert got["space"] != str(space) and open(got["space"]).read() == SMOKE.read_text()
    # a path relative to the checkout wins when it holds the same file
    moved = {**record, "space": "/gone/smoke.yaml", "space_rel": "search_spaces/smoke.yaml",
             "space_sha256": kept_inputs.keep(exp, str(SMOKE), record["data"])["space_sha256"]}
    assert kept_inputs.surviving(moved, exp)["space"] == str(SMOKE.resolve())


def test_gone_data_is_one_line_naming_it(tmp_path):
    exp = str(tmp_path / "exp")
    record = {"space": str(SMOKE), "data": str(tmp_path / "gone.parquet"),
              **kept_inputs.keep(exp, str(SMOKE), str(tmp_path / "gone.parquet"))}
    with pytest.raises(InputError, match="gone.parquet: the experiment's data is gone"):
        kept_inputs.surviving(record, exp)


def test_credentials_in_the_storage_uri_are_refused():
    preflight.check_storage_uri("s3://bucket/prefix")
    with pytest.raises(InputError, match="credentials in the URI"):
        preflight.check_storage_uri("s3://AKIA:secret@bucket/prefix")


def test_tunes_copy_of_the_drivers_keys_is_switched_off():
    """Tune's list of variables it copies into every trial (ray/tune/execution/class_cache.py) held the AWS
    keys in Ray 2.60; after keep_credentials_home() it holds none (a Ray upgrade that renames it fails here)."""
    from ray.tune.execution import class_cache

    preflight.keep_credentials_home()
    assert not set(preflight.CREDENTIAL_VARS) & class_cache.ENV_VARS_TO_PROPAGATE


def test_fingerprint_changes_with_the_code(tmp_path):
    pkg = tmp_path / "tune_p7"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    before = preflight.fingerprint(str(pkg))
    (pkg / "a.py").write_text("x = 1\n")
    assert preflight.fingerprint(str(pkg)) != before
