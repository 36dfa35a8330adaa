"""The console entry points: ``tune-p7 COMMAND``, ``python -m tune_p7.<module>`` and no sys.path tricks."""
import re
import sys
import tomllib

import pytest

from conftest import REPO, run_cli
from tune_p7.commands import COMMANDS

MODULES = [module for module, _ in COMMANDS.values()]


def test_pyproject_names_the_dispatcher_and_it_lists_every_command():
    target = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]["tune-p7"]
    module, func = target.split(":")
    r = run_cli("-c", f"from {module} import {func}; {func}(['--help'])", timeout=120)
    assert r.returncode == 0, r.stderr
    assert set(COMMANDS) == set(re.findall(r"^  (\S+) ", r.stdout, flags=re.M)), r.stdout
    assert set(COMMANDS) == {"search", "summarize", "evaluate", "probe", "train", "replay", "synth", "build-data",
                             "convert"}


def test_a_subcommand_shows_its_own_help_with_each_default_once():
    r = run_cli("-c", "from tune_p7.commands import main; main(['search', '--help'])", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "--verbose" in r.stdout and "(default:" not in r.stdout
    assert r.stdout.count("[default: data/pydocs.parquet") == 1 and "[default: None]" not in r.stdout


def test_an_unknown_command_is_one_line_and_exit_2():
    r = run_cli("-c", "from tune_p7.commands import main; main(['serach'])", timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "unknown command" in r.stderr, r.stderr


@pytest.mark.parametrize("module", MODULES)
def test_every_command_runs_as_a_module(module):
    r = run_cli("-m", module, "--help", timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("usage: "), r.stderr


def test_search_runs_as_a_file_as_the_readme_says():
    r = run_cli(REPO / "tune_p7" / "search.py", "--help", timeout=120)
    assert r.returncode == 0 and "--space" in r.stdout, r.stderr


def test_no_module_edits_sys_path_or_silences_late_imports():
    for f in (REPO / "tune_p7").glob("*.py"):
        text = f.read_text()
        assert "sys.path" not in text and "E402" not in text, f.name


def test_no_module_name_shadows_an_installed_module():
    """``python tune_p7/search.py`` puts tune_p7/ first on sys.path (workers too): a module there named like
    an importable one would replace it."""
    from importlib.machinery import PathFinder

    installed = [p for p in sys.path if p and not p.startswith(str(REPO))]  # not the checkout's own folders
    for f in (REPO / "tune_p7").glob("*.py"):
        assert f.stem not in sys.builtin_module_names and PathFinder.find_spec(f.stem, installed) is None, f.stem


@pytest.mark.parametrize("body, code", [("return 3", 3), ("raise InputError('f.yaml', 'bad')", 2), ("return None", 0)])
def test_a_command_exits_with_its_code_after_the_atexit_handlers_and_its_output(body, code):
    """cli.run leaves through cli.leave: stdout written, atexit handlers run (Ray's shutdown is one), then the exit
    code, skipping only the interpreter's teardown (where Arrow's thread pools can abort a finished command)."""
    prog = ("import atexit, sys\nfrom tune_p7 import cli\nfrom tune_p7.errors import InputError\n"
            "atexit.register(lambda: print('atexit ran'))\n"
            f"def main():\n    print('work done', end='')\n    {body}\ncli.run(main)\n")
    r = run_cli("-c", prog, timeout=60)
    assert r.returncode == code, r.stderr
    assert r.stdout.startswith("work done") and "atexit ran" in r.stdout, r.stdout
