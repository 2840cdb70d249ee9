"""The project contract: README's two commands, CI calling the test one, version ranges that
admit today's releases, and a Makefile that finds a Python >= 3.12 by itself."""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [
        ln.strip()
        for ln in ci.splitlines()
        if ln.strip() and not ln.lstrip().startswith(("#", "set ", "cd "))
    ]
    *before, last = commands
    assert last == "make test", commands
    # before it, only the installation of Debian's chromium (tests/test_browser.py drives it)
    assert any("apt-get install" in c and c.endswith(" chromium") for c in before), before
    assert all("chromium" in c or "SUDO" in c or c == "fi" for c in before), before


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def test_jax_and_flax_ranges_admit_todays_releases():
    import flax
    import jax

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {re.split(r"[<>=!~ \[]", d)[0]: d for d in project["dependencies"]}
    assert _version(pins["jax"].split(">=")[1]) >= (0, 12), pins["jax"]
    assert _version(pins["flax"].split(">=")[1]) >= (0, 12, 12), pins["flax"]
    for name, module in (("jax", jax), ("flax", flax)):
        upper = re.search(r"<\s*([\d.]+)", pins[name])
        # no cap, or one above what is installed: installing never downgrades today's release
        assert upper is None or _version(upper.group(1)) > _version(module.__version__), pins
    assert project["requires-python"] == ">=3.12"
    assert sys.version_info >= (3, 12)


def test_find_python_picks_a_python_312_or_newer():
    script = ROOT / "tools" / "find_python.sh"
    out = subprocess.run(["sh", str(script)], capture_output=True, text=True, check=True)
    exe = out.stdout.strip()
    version = subprocess.run(
        [exe, "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert eval(version) >= (3, 12), (exe, version)


def test_find_python_says_what_to_install_when_there_is_none(tmp_path):
    env = dict(
        os.environ, PATH=str(tmp_path), PYENV_ROOT=str(tmp_path / "nothing"), HOME=str(tmp_path)
    )
    sh = subprocess.run(["which", "sh"], capture_output=True, text=True).stdout.strip()
    if not sh:
        pytest.skip("no sh")
    out = subprocess.run(
        [sh, str(ROOT / "tools" / "find_python.sh")], capture_output=True, text=True, env=env
    )
    assert out.returncode == 1
    assert "Python >= 3.12" in out.stderr and "pyenv install 3.12" in out.stderr


def test_environment_yml_installs_the_same_thing():
    env = (ROOT / "environment.yml").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "-e .[dev]" in env  # the pyproject (and its pins) is the single source
    py = re.search(r"python>=(\d+\.\d+)", env).group(1)
    assert project["requires-python"] == f">={py}"


def test_makefile_test_target_lints_and_runs_pytest():
    """`make test` lints (ruff check and format) and runs the whole suite; `make test-fast`
    runs the same pytest command without the slow tiers, which pyproject registers."""
    mk = (ROOT / "Makefile").read_text()
    target = mk.split("\ntest:")[1].split("\n\n")[0]
    pytest_cmd = re.search(r"^PYTEST := (.*)$", mk, re.M).group(1)
    assert "lint" in target and "$(PYTEST)" in target and " -m " not in target
    assert "-m pytest" in pytest_cmd and "-rs" in pytest_cmd
    fast = mk.split("\ntest-fast:")[1].split("\n\n")[0]
    assert "$(PYTEST)" in fast
    tiers = re.search(r'-m "not \((.*)\)"', fast).group(1).split(" or ")
    markers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"][
        "markers"
    ]
    assert sorted(tiers) == sorted(m.split(":")[0] for m in markers)
    lint = mk.split("\nlint:")[1].split("\n\n")[0]
    assert "ruff check" in lint and "ruff format --check" in lint


def test_public_api_is_one_import():
    """`import grok_flax as gf` gives the model, loading, meshes and generation; viz and the
    demo model load on first use."""
    import grok_flax as gf

    for name in gf.__all__:
        assert getattr(gf, name) is not None, name
    assert gf.make_mesh is gf.scale.mesh.make_mesh
    assert gf.load_checkpoint is gf.checkpoint.loader.load_checkpoint
    assert gf.viz.routing_heatmap and gf.demo.DEMO_DIR.is_dir()


def test_the_walkthrough_opens_in_jupyterlab():
    """`make lab` opens the notebooks; the set-up installs JupyterLab (notebooks extra, part
    of dev) into the same environment as the kernel."""
    mk = (ROOT / "Makefile").read_text()
    target = mk.split("\nlab:")[1].split("\n\n")[0]
    assert "setup" in target and "jupyter lab notebooks/" in target
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert any(d.startswith("jupyterlab") for d in extras["notebooks"])
    assert any("notebooks" in d for d in extras["dev"] if d.startswith("grok_flax["))
    lab = Path(sys.executable).parent / "jupyter-lab"
    out = subprocess.run([str(lab), "--version"], capture_output=True, text=True, check=True)
    assert _version(out.stdout.strip()) >= (4,), out.stdout
