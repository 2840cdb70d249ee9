"""Every Python code block of the README runs, in order, in one namespace (as a reader who
pastes them one after the other), with 8 simulated devices."""

import os
import re

import pytest
from conftest import ROOT


def python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_readme_has_python_blocks():
    assert len(python_blocks()) >= 3


@pytest.mark.slow
def test_every_readme_python_block_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks may write files (a figure)
    namespace: dict = {}
    for i, block in enumerate(python_blocks()):
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as e:  # say which block
            raise AssertionError(f"README python block {i + 1} failed: {e!r}\n{block}") from e
    assert os.path.isfile(tmp_path / "routing.png")
    assert namespace["gf"].param_count(namespace["abstract"]) == 315_684_820_992
    assert all(len(t) > 0 for t in namespace["result"].tokens)
