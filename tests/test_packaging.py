"""pyproject.toml declares what requirements*.txt pin: the same packages, and every pin satisfies its declared
range, so `pip install .` / `pip install ".[search]"` get what the tests ran with."""
import re
import tomllib

import pytest
from packaging.requirements import Requirement

from conftest import REPO

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
FILES = {None: "requirements.txt", "search": "requirements-search.txt", "data": "requirements-data.txt",
         "tracking": "requirements-tracking.txt", "test": "requirements-test.txt"}


def pins(name: str) -> dict[str, Requirement]:
    """{normalized name: requirement} of one requirements file's own lines (not its -r includes, not -e .)."""
    out = {}
    for line in (REPO / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            out[norm(req.name)] = req
    return out


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(extra: str | None) -> dict[str, Requirement]:
    reqs = PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]
    return {norm(r.name): r for r in map(Requirement, reqs) if norm(r.name) != "tune-p7"}


@pytest.mark.parametrize("extra", list(FILES), ids=lambda e: e or "runtime")
def test_each_requirements_file_and_its_pyproject_list_name_the_same_packages_and_the_pins_fit(extra):
    pinned, spec = pins(FILES[extra]), declared(extra)
    if extra == "data":  # requirements-data.txt repeats torch's pin (a runtime dependency) to keep it the CPU build
        pinned.pop("torch")
    assert set(pinned) == set(spec), (FILES[extra], sorted(set(pinned) ^ set(spec)))
    for name, req in pinned.items():
        version = next(iter(req.specifier)).version
        assert spec[name].specifier.contains(version, prereleases=True), (name, version, str(spec[name]))
        assert req.extras == spec[name].extras, name


def test_the_test_extra_brings_every_other_extra_as_requirements_test_does():
    text = (REPO / "requirements-test.txt").read_text()
    assert all(f"-r requirements-{x}.txt" in text for x in ("data", "search", "tracking"))
    assert "mlflow" not in (REPO / "requirements.txt").read_text()  # optional: the first command does not install it
    assert any(norm(Requirement(r).name) == "tune-p7" and Requirement(r).extras == {"search", "data", "tracking"}
               for r in PROJECT["optional-dependencies"]["test"])


def test_torch_is_pinned_exactly():
    """A range lets pip pick PyPI's CUDA build of a newer torch (gigabytes) over the CPU wheel."""
    assert str(declared(None)["torch"].specifier).startswith("==")
