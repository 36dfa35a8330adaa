"""Every bench script a user would run ends its --quick run with exit 0 and writes its result (into the untracked
bench/results/quick/). They take minutes of a shared CPU each, so they are marked ``slow`` and left out of the
default run: `python -m pytest -m slow tests/test_bench_quick.py` runs them."""
import json

import pytest

from conftest import REPO, run_cli

BENCH = REPO / "bench"
QUICK = [p for p in sorted(BENCH.glob("*.py"))
         if p.name not in ("common.py", "run_all.py") and "--quick" in p.read_text()]


@pytest.mark.slow
@pytest.mark.parametrize("script", QUICK, ids=lambda p: p.stem)
def test_the_quick_run_of_every_bench_script_ends_and_writes_its_result(script):
    r = run_cli(script, "--quick", timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Traceback" not in r.stdout + r.stderr
    written = BENCH / "results" / "quick" / f"{script.stem}.json"
    assert written.exists() and json.loads(written.read_text())

