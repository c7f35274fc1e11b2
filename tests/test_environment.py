"""environment.yml (conda) and pyproject.toml (pip) pin the same versions."""
import re
import tomllib

import yaml

from lib.params import ROOT


def pins_pyproject() -> dict[str, str]:
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = proj["dependencies"] + [r for extra in proj["optional-dependencies"].values() for r in extra]
    return dict(re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^;\s]+)", r).groups() for r in reqs)


def pins_conda() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    return dict(re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", r).groups() for r in pip if "==" in r)


def test_every_pip_requirement_is_exactly_pinned():
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for r in proj["dependencies"]:
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+==\S+", r), f"pyproject.toml: '{r}' is not an exact pin"


def test_conda_and_pip_pins_agree():
    assert pins_conda() == pins_pyproject()


def test_conda_env_installs_the_project():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip and env["name"] == "memaudit"


def test_paper_versions():
    pins = pins_pyproject()
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1" and pins["ffcv"] == "1.0.2"
