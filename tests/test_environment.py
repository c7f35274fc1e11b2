"""environment.yml (conda) and pyproject.toml (pip) describe the same environment.

Both files are parsed; nothing here restates a version. The parsers take the files' text, so
the checks themselves are tested on small made-up files that disagree.
"""
import re
import tomllib

import pytest
import yaml

from lib.params import ROOT

PIN = re.compile(r"([A-Za-z0-9_.\-]+)==([^;\s]+)")  # name==version (an environment marker may follow)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503: Pillow == pillow, a_b == a-b


def pyproject_requirements(text: str) -> list[str]:
    """Every requirement string of pyproject.toml: dependencies and every optional extra."""
    proj = tomllib.loads(text)["project"]
    return list(proj["dependencies"]) + [r for extra in proj.get("optional-dependencies", {}).values() for r in extra]


def conda_pip_requirements(text: str) -> list[str]:
    """The `pip:` list of environment.yml, without the editable install of the project itself."""
    env = yaml.safe_load(text)
    pips = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pips) == 1, "environment.yml must have exactly one pip: section"
    return [r for r in pips[0] if r.strip() != "-e ."]


def pins(reqs: list[str], where: str) -> dict[str, str]:
    """{normalised name: version}; every requirement must be an exact pin, each name once."""
    out = {}
    for r in reqs:
        m = PIN.fullmatch(r.strip())
        assert m, f"{where}: '{r}' is not an exact pin (name==version)"
        name = _norm(m.group(1))
        assert name not in out, f"{where}: {name} is listed twice"
        out[name] = m.group(2)
    return out


def disagreements(pyproject_text: str, environment_text: str) -> list[str]:
    """One line per package whose pin differs between the two files, or that only one file lists."""
    pp = pins(pyproject_requirements(pyproject_text), "pyproject.toml")
    ce = pins(conda_pip_requirements(environment_text), "environment.yml")
    return [f"{n}: pyproject {pp.get(n, 'absent')}, environment.yml {ce.get(n, 'absent')}"
            for n in sorted(pp.keys() | ce.keys()) if pp.get(n) != ce.get(n)]


PYPROJECT = (ROOT / "pyproject.toml").read_text()
ENVIRONMENT = (ROOT / "environment.yml").read_text()


def test_every_requirement_in_both_files_is_an_exact_pin():
    pp = pins(pyproject_requirements(PYPROJECT), "pyproject.toml")
    ce = pins(conda_pip_requirements(ENVIRONMENT), "environment.yml")
    assert "torch" in pp and "torch" in ce  # the files were actually read


def test_conda_and_pip_pins_agree():
    assert disagreements(PYPROJECT, ENVIRONMENT) == []


def test_disagreements_are_found():
    # the check above is only as good as the parser: a changed, a missing and an unpinned entry
    pyproject = '[project]\ndependencies = ["numpy==2.0.0", "scipy==1.0.0"]\n' \
                '[project.optional-dependencies]\ndev = ["pytest==9.0.0"]\n'
    env = "dependencies:\n  - pip\n  - pip:\n      - numpy==2.0.1\n      - pytest==9.0.0\n      - -e .\n"
    assert disagreements(pyproject, env) == ["numpy: pyproject 2.0.0, environment.yml 2.0.1",
                                             "scipy: pyproject 1.0.0, environment.yml absent"]
    same = "dependencies:\n  - pip:\n      - NumPy==2.0.0\n      - scipy==1.0.0\n      - pytest==9.0.0\n"
    assert disagreements(pyproject, same) == []  # names compare as pip compares them
    with pytest.raises(AssertionError, match="not an exact pin"):
        disagreements(pyproject, env.replace("pytest==9.0.0", "pytest>=9"))
    with pytest.raises(AssertionError, match="not an exact pin"):
        disagreements(pyproject.replace("scipy==1.0.0", "scipy"), env)


def test_conda_python_satisfies_requires_python():
    env = yaml.safe_load(ENVIRONMENT)
    conda_python = [d for d in env["dependencies"] if isinstance(d, str) and re.fullmatch(r"python[=<>]\S*", d)]
    assert len(conda_python) == 1, "environment.yml must pin python exactly once"
    version = tuple(int(v) for v in re.fullmatch(r"python=(\d+)\.(\d+)\S*", conda_python[0]).groups())
    requires = tomllib.loads(PYPROJECT)["project"]["requires-python"]
    lower = re.fullmatch(r">=\s*(\d+)\.(\d+)", requires)
    assert lower, f"requires-python '{requires}': only a lower bound is understood here"
    assert version >= tuple(int(v) for v in lower.groups()), f"conda python {version} vs requires-python {requires}"


def test_conda_env_installs_the_project_under_the_name_the_makefile_expects():
    env = yaml.safe_load(ENVIRONMENT)
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip  # the project's own package, as `pip install -e .` does for .venv
    # the Makefile uses an active conda env as is only when it has this name
    make = (ROOT / "Makefile").read_text()
    named = re.search(r"ifeq \(\$\(CONDA_DEFAULT_ENV\),\s*(\S+?)\)", make)
    assert named, "Makefile no longer tests CONDA_DEFAULT_ENV"
    assert env["name"] == named.group(1)


def test_ffcv_system_libraries_are_in_the_conda_env():
    # pip cannot build ffcv without these; the Makefile's pkg-config probe names them for .venv
    env = yaml.safe_load(ENVIRONMENT)
    conda = {re.split(r"[=<>]", d)[0] for d in env["dependencies"] if isinstance(d, str)}
    if "ffcv" in pins(conda_pip_requirements(ENVIRONMENT), "environment.yml"):
        assert {"pkg-config", "opencv", "libjpeg-turbo"} <= conda, conda
