"""The walkthrough notebooks execute without error, each within its time budget.

Each notebook is executed in memory by nbclient (the committed files are not modified; the
executed copy goes to a temporary folder). The budget is 120 s per notebook on 2 free CPU
cores; when the machine is busy with other work (1-minute load average above the core count)
the budget is stretched by load / cores, so a loaded CI box doesn't fail on time alone.
``GROK_FLAX_SKIP_NOTEBOOKS=1`` skips them (they take minutes in total);
``GROK_FLAX_NOTEBOOK_BUDGET`` overrides the 120 s.
"""

import importlib.util
import os
import time

import pytest
from conftest import ROOT

NOTEBOOKS = ROOT / "notebooks"
_spec = importlib.util.spec_from_file_location("run_all", NOTEBOOKS / "run_all.py")
run_all = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_all)

BUDGET = float(os.environ.get("GROK_FLAX_NOTEBOOK_BUDGET", run_all.BUDGET_SECONDS))
PATHS = run_all.notebooks()

pytestmark = [
    pytest.mark.notebooks,
    pytest.mark.skipif(
        os.environ.get("GROK_FLAX_SKIP_NOTEBOOKS") == "1", reason="GROK_FLAX_SKIP_NOTEBOOKS=1"
    ),
]


def _load_factor() -> float:
    try:
        load = os.getloadavg()[0]
    except OSError:
        return 1.0
    return max(1.0, load / (os.cpu_count() or 1))


def test_there_are_eleven_notebooks():
    assert [p.name[:2] for p in PATHS] == [f"{i:02d}" for i in range(1, 12)], PATHS


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    load_before = _load_factor()
    t0 = time.perf_counter()
    try:
        seconds = run_all.run_notebook(path, tmp_path / path.name, timeout=600)
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{path.name} failed:\n{e}")
    assert (tmp_path / path.name).stat().st_size > 0
    factor = max(load_before, _load_factor())
    print(
        f"{path.name}: {seconds:.1f} s (wall {time.perf_counter() - t0:.1f} s, "
        f"load factor {factor:.1f})"
    )
    assert seconds <= BUDGET * factor, (
        f"{path.name} took {seconds:.0f} s, over its {BUDGET:.0f} s budget "
        f"(× {factor:.1f} for the machine's load)"
    )
