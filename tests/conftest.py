"""Shared fixtures: small synthetic article stores and a small model config."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tune_p7.config import P7Config
from tune_p7.store import write_store
from tune_p7.synth import generate

REPO = Path(__file__).resolve().parent.parent
SMALL = dict(d_model=64, n_layers=2, n_heads=4, d_ff=128, lstm_layers=1, batch_size=64, lr=2e-3, threads=1,
             warmup_epochs=1, epochs=3, precision="fp32")


def small_config(**changes) -> P7Config:
    return P7Config.from_dict({**SMALL, **changes})


def make_store(path, articles=300, chunks=24, dim=64, signal=2.0, seed=0):
    a, i, v = generate(articles, chunks, dim, signal, seed)
    write_store(path, a, i, v, dtype="float32")
    return path


@pytest.fixture(scope="session")
def strong_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("data") / "strong.parquet", signal=2.0)


@pytest.fixture(scope="session")
def flat_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("data") / "flat.parquet", signal=0.0)


@pytest.fixture(scope="session")
def small_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("data") / "small.parquet", articles=80, chunks=12, dim=32)


def run_cli(*args, timeout=600, cwd=None, **kw) -> subprocess.CompletedProcess:
    """Run a command line with this Python, capturing text output."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **kw.pop("env", {})}
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or REPO, env=env, **kw)
