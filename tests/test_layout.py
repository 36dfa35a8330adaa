"""The package's layout: subpackages by stage of the data flow, each importing only the stages before it, and at
tune_p7/'s top only the commands, the search's driver and the shared plumbing. Imports are read with ``ast``
(those inside functions too), so a lazy import counts as much as one at the top."""
import ast

from conftest import REPO

PACKAGE = REPO / "tune_p7"
STAGES = ["data", "core", "space", "tuning", "report", "evaluation"]  # each may import the ones before it
PLUMBING = {"errors", "storage", "cli", "experiment"}  # imported by every stage; they import only each other
COMMANDS_AND_DRIVER = {"__init__", "commands", "search", "search_options", "probe", "summarize", "train",  # import any
                       "connect", "job", "preflight", "kept_inputs", "probe_cache"}


def imported(path) -> set[str]:
    """The tune_p7 modules and packages that ``path`` imports, as dotted names below tune_p7 ('core.loop')."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name[len("tune_p7."):] for a in node.names if a.name.startswith("tune_p7.")}
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import")
        elif isinstance(node, ast.ImportFrom) and node.module == "tune_p7":
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module.startswith("tune_p7."):
            out.add(node.module[len("tune_p7."):])
    return out


def place(module: str) -> str:
    """The stage ('core') of a dotted name below tune_p7, or the top module's own name ('errors')."""
    return module.split(".")[0]


def test_the_top_holds_only_the_stages_the_commands_the_driver_and_the_plumbing():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == PLUMBING | COMMANDS_AND_DRIVER, sorted(top ^ (PLUMBING | COMMANDS_AND_DRIVER))
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(STAGES), sorted(folders)
    for stage in STAGES:
        assert (PACKAGE / stage / "__init__.py").exists(), stage


def test_each_stage_imports_only_the_stages_before_it_and_the_plumbing():
    wrong = []
    for i, stage in enumerate(STAGES):
        allowed = set(STAGES[:i + 1]) | PLUMBING
        for path in sorted((PACKAGE / stage).rglob("*.py")):
            wrong += [f"{path.relative_to(PACKAGE)} imports tune_p7.{m}" for m in sorted(imported(path))
                      if place(m) not in allowed]
    assert not wrong, "\n".join(wrong)


def test_the_plumbing_imports_no_stage_and_no_command():
    for name in sorted(PLUMBING):
        assert {place(m) for m in imported(PACKAGE / f"{name}.py")} <= PLUMBING, name


def test_a_stage_package_imports_none_of_its_modules():
    """Importing tune_p7.core must not import torch, nor tune_p7.tuning Ray: a bad input is refused before they load."""
    for stage in STAGES:
        tree = ast.parse((PACKAGE / stage / "__init__.py").read_text())
        assert ast.get_docstring(tree), stage
        assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))], stage


def test_no_module_but_experiment_names_a_file_of_the_experiment_folder():
    """tune_p7/experiment.py owns the names of the experiment folder's files: no other module holds one as a string
    literal, alone or ending a path (a message may still mention a file by name)."""
    from tune_p7.experiment import FILES

    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "experiment.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and any(
                    node.value == name or node.value.endswith("/" + name) for name in FILES):
                wrong.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.value!r}")
    assert not wrong, "\n".join(wrong)
