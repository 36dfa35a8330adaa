"""Every bench script writes its result through bench/common.py's interface, so that each one's --quick runs to
the end (a bad call only fails after the whole benchmark has run, which no test affords: the benches take
minutes of a shared CPU). The calls are checked against the real signatures, from the scripts' syntax trees."""
import ast
import inspect
import sys

import pytest

from conftest import REPO

BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))
import common  # noqa: E402  (bench/common.py: the interface)

SCRIPTS = sorted(p for p in BENCH.glob("*.py") if p.name != "common.py")
INTERFACE = ("write_result", "results_dir")


def calls(path, name):
    """The calls of ``name`` (a bare name or common.<name>) in one script."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and (getattr(n.func, "id", None) == name or getattr(n.func, "attr", None) == name)]


def unbound(fn, call: ast.Call) -> str | None:
    """Why ``call`` would not bind to ``fn``'s signature (None when it binds); placeholders for the values."""
    if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
        return "*args / **kwargs: say each argument"
    try:
        inspect.signature(fn).bind(*range(len(call.args)), **{k.arg: 0 for k in call.keywords})
    except TypeError as e:
        return str(e)
    return None


def test_the_interface_still_requires_quick():
    """What the checks below rely on: forgetting ``quick=`` must not bind."""
    assert "quick" in inspect.signature(common.write_result).parameters
    bad = ast.parse("write_result('confirm', out)").body[0].value
    assert "quick" in unbound(common.write_result, bad)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_bench_script_calls_the_result_interface_as_it_is_defined(script):
    problems = [f"{script.name}:{c.lineno} {name}(): {why}" for name in INTERFACE for c in calls(script, name)
                if (why := unbound(getattr(common, name), c))]
    for c in calls(script, "write_result"):  # a name, not a path: the folder is results_dir(quick)'s
        first = c.args[0] if c.args else None
        if isinstance(first, ast.Constant) and "/" in str(first.value):
            problems.append(f"{script.name}:{c.lineno} write_result({first.value!r}): a path, not a name")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("script", [p for p in SCRIPTS if "--quick" in p.read_text() and p.name != "run_all.py"],
                         ids=lambda p: p.name)
def test_every_bench_with_quick_writes_its_result_through_write_result(script):
    assert calls(script, "write_result"), f"{script.name} takes --quick but never calls common.write_result"


def test_write_result_puts_a_quick_run_in_the_untracked_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "QUICK_RESULTS", tmp_path / "quick")
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    path = common.write_result("fake", {"x": float("nan")}, quick=True)
    assert path == tmp_path / "quick" / "fake.json" and '"x": null' in path.read_text()
