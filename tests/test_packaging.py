"""The project contract: README's two commands, CI calling the test one, pinned ranges."""

import re
import tomllib

from conftest import ROOT


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [ln.strip() for ln in ci.splitlines()
                if ln.strip() and not ln.lstrip().startswith(("#", "set ", "cd "))]
    assert commands == ["make test"]


def test_jax_and_flax_are_pinned_to_ranges():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {re.split(r"[<>=!~ ]", d)[0]: d for d in deps}
    for name in ("jax", "flax"):
        assert ">=" in pins[name] and "<" in pins[name].split(">=")[1], pins[name]


def test_environment_yml_installs_the_same_thing():
    env = (ROOT / "environment.yml").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "-e .[dev]" in env  # the pyproject (and its pins) is the single source
    py = re.search(r"python>=(\d+\.\d+)", env).group(1)
    assert project["requires-python"] == f">={py}"


def test_makefile_test_target_lints_and_runs_pytest():
    mk = (ROOT / "Makefile").read_text()
    target = mk.split("\ntest:")[1].split("\n\n")[0]
    assert "lint" in target and "pytest" in target
