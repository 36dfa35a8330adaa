"""tune_p7.probe_cache: a search's data probe is computed once for the same vectors, parameters and code, and
anything that could change it (a vector, a parameter, the code) computes it again; a broken cache never breaks a
search."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from conftest import REPO, make_store
from tune_p7 import probe_cache
from tune_p7.data.loading import load
from tune_p7.search import probe_data
from tune_p7.space.file import load_space

PARAMS = {"context_length": 5, "gates": {"drift": 0.05, "margin": 0.1}, "warmup_epochs": 1}
PROBE = {"splits": {"val": {"delta": -0.0038}}, "k": [1, 2.5, None]}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(probe_cache.FOLDER_VAR, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def data(tmp_path):
    return load(make_store(tmp_path / "s.parquet", articles=40, chunks=8, dim=16))


class Counted:
    """A probe stand-in that counts its calls (the real probe is tests/test_probe.py's)."""

    def __init__(self, result=None):
        self.calls, self.result = 0, result or PROBE

    def __call__(self):
        self.calls += 1
        return self.result


def test_a_second_probe_of_the_same_data_and_parameters_is_read_not_computed(cache, data, tmp_path):
    compute = Counted()
    first = probe_cache.cached(data, PARAMS, compute)
    again = probe_cache.cached(load(tmp_path / "s.parquet"), dict(PARAMS), compute)  # the same file loaded again
    assert first == again == compute.result and compute.calls == 1
    assert [p.suffix for p in cache.iterdir()] == [".json"]


def test_another_vector_split_or_parameter_computes_it_again(cache, data):
    compute = Counted()
    probe_cache.cached(data, PARAMS, compute)
    chunks = data.val.chunks.copy()
    chunks[3, 2] += 1e-3
    changed = dataclasses.replace(data, val=dataclasses.replace(data.val, chunks=chunks))
    probe_cache.cached(changed, PARAMS, compute)
    probe_cache.cached(dataclasses.replace(data, ood=None), PARAMS, compute)
    probe_cache.cached(data, {**PARAMS, "context_length": 3}, compute)
    probe_cache.cached(data, {**PARAMS, "gates": {"drift": 0.05, "margin": 0.2}}, compute)
    assert compute.calls == 5 and len(list(cache.iterdir())) == 5


def test_a_change_of_the_code_is_a_new_key(data, tmp_path):
    package = tmp_path / "pkg"
    shutil.copytree(probe_cache.PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    before = probe_cache.source_digest(package)
    assert before == probe_cache.source_digest(probe_cache.PACKAGE)
    with open(package / "probe.py", "a") as f:
        f.write("\n# a change\n")
    after = probe_cache.source_digest(package)
    assert after != before
    assert probe_cache.key(data, PARAMS, before) != probe_cache.key(data, PARAMS, after)


@pytest.mark.parametrize("text", ["{\"splits\": ", "null", "", "{}"], ids=["torn", "null", "empty", "no-splits"])
def test_a_kept_file_that_is_not_a_probe_is_computed_again_and_replaced(cache, data, text):
    compute = Counted()
    path = cache / f"{probe_cache.key(data, PARAMS)}.json"
    cache.mkdir(parents=True)
    path.write_text(text)
    assert probe_cache.cached(data, PARAMS, compute) == compute.result and compute.calls == 1
    assert json.loads(path.read_text()) == compute.result


def test_a_cache_that_cannot_be_written_still_gives_the_probe(tmp_path, monkeypatch, data):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv(probe_cache.FOLDER_VAR, str(tmp_path / "file" / "probes"))
    compute = Counted()
    assert probe_cache.cached(data, PARAMS, compute) == compute.result
    assert probe_cache.cached(data, PARAMS, compute) == compute.result and compute.calls == 2
    assert list(tmp_path.glob("**/*.tmp")) == []


def test_the_same_vectors_in_another_file_get_a_probe_that_names_that_file(cache, data, tmp_path):
    """The probe names its data: a copy of a probed store is probed again, not read as the original's."""
    shutil.copy(tmp_path / "s.parquet", tmp_path / "copy.parquet")
    copy = load(tmp_path / "copy.parquet")
    space = load_space(REPO / "search_spaces" / "smoke.yaml")
    assert probe_data(data, space)["data"] == data.source
    assert probe_data(copy, space)["data"] == copy.source != data.source
    assert len(list(cache.iterdir())) == 2


def test_without_a_home_folder_the_probe_is_computed_and_not_kept(tmp_path, monkeypatch, data):
    def no_home(cls):  # what pathlib raises for a user without HOME or a passwd entry
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.delenv(probe_cache.FOLDER_VAR)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(Path, "home", classmethod(no_home))
    compute = Counted()
    assert probe_cache.cached(data, PARAMS, compute) == compute.result and compute.calls == 1


def test_the_default_folder_is_under_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv(probe_cache.FOLDER_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert probe_cache.folder() == tmp_path / "tune_p7" / "probes"
