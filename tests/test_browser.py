"""The walkthrough in a real browser: JupyterLab driven by Playwright in Debian's Chromium.

Starts JupyterLab on a free local port over a temporary copy of ``notebooks/``, then

* opens notebook 01 and checks that its committed figures render as images, that the
  notebook is trusted and that JupyterLab does not ask about its news feed;
* opens notebook 04, runs its first cell and the routing explorer's cell, checks that the
  explorer's three figures are drawn (each at its own aspect ratio, drawn with more pixels
  than it is shown with), picks another token and moves the layer slider, and checks that
  the figures were redrawn — with no error output anywhere in the notebook.

Trust and the news question are set up the way ``make lab`` does for the user's JupyterLab:
``jupyter trust`` signs the notebooks (the signatures go to a per-user SQLite database in the
Jupyter data dir, here the server's temporary one) and an ``overrides.json`` in JupyterLab's
application settings dir sets the news feed's default to "never" (the Makefile writes
``LAB_OVERRIDES`` to ``.venv/share/jupyter/lab/settings/overrides.json``; here it goes to a
temporary dir passed as ``--LabApp.app_settings_dir``).

Needs the ``playwright`` package (in the ``dev`` extra) and a Chromium binary: the system's
``chromium`` (Debian: ``apt-get install chromium``; ``.ci/run`` installs it) or the one named
by ``GROK_FLAX_CHROMIUM``. Playwright's own browser download is not used. Skips, saying
which is missing, when either is absent. A screenshot of the explorer is written to
``runs/browser/`` (or ``GROK_FLAX_SCREENSHOTS``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, free_port

pytestmark = pytest.mark.browser

NOTEBOOKS = ROOT / "notebooks"
EXPLORER_NB = "04_router_and_experts.ipynb"
TOUR_NB = "01_tour.ipynb"
# JupyterLab's default settings overridden, as the Makefile writes them for ``make lab``:
# fetchNews "false" (a string: "none" = ask, the default) stops the "Would you like to get
# notified about official Jupyter news?" pop-up; update checks only run when news are fetched
LAB_OVERRIDES = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False}
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server over a copy of the notebooks: (base url, token)."""
    jupyter_lab = Path(sys.executable).parent / "jupyter-lab"
    if not jupyter_lab.exists():
        pytest.skip(f"{jupyter_lab} not found: JupyterLab is in the notebooks extra")
    tmp = tmp_path_factory.mktemp("lab")
    work = tmp / "notebooks"
    shutil.copytree(NOTEBOOKS, work, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    # render every cell (JupyterLab virtualises long notebooks: off-screen cells would not be
    # in the page to check)
    settings = tmp / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    app_settings = tmp / "app-settings"  # the Makefile: .venv/share/jupyter/lab/settings
    app_settings.mkdir()
    (app_settings / "overrides.json").write_text(json.dumps(LAB_OVERRIDES))
    port, token = free_port(), secrets.token_hex(16)
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_DATA_DIR=str(tmp / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
    )
    # sign the copies as `make lab` signs notebooks/: into this server's own data dir
    subprocess.run(
        [str(jupyter_lab.parent / "jupyter-trust"), *sorted(str(p) for p in work.glob("*.ipynb"))],
        env=env,
        check=True,
        capture_output=True,
    )
    # the kernel is the venv's own: python3 in this interpreter's prefix
    log = open(tmp / "lab.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [
            str(jupyter_lab),
            "--no-browser",
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={work}",
            "--LabApp.check_for_updates_class="
            "jupyterlab.handlers.announcements.NeverCheckForUpdate",
            f"--LabApp.app_settings_dir={app_settings}",
            *(["--allow-root"] if os.geteuid() == 0 else []),
        ],  # CI containers run as root
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    raise RuntimeError(
                        "JupyterLab did not start:\n" + (tmp / "lab.log").read_text()[-3000:]
                    ) from None
                time.sleep(0.5)
        yield base, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _open(browser, lab, name, height: int = 1000):
    base, token = lab
    page = browser.new_page(viewport={"width": 1400, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # a workspace of its own, so the page shows this notebook alone
    page.goto(
        f"{base}/lab/workspaces/{Path(name).stem}/tree/{name}?reset&token={token}",
        wait_until="domcontentloaded",
    )
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    return page, errors


def _no_error_outputs(page) -> None:
    bad = page.locator(
        ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
        ", .jp-RenderedText[data-mime-type='application/vnd.jupyter.error']"
    )
    texts = [t for t in bad.all_inner_texts() if "Error" in t or "Traceback" in t]
    assert not texts, "error output in the notebook:\n" + "\n---\n".join(texts)[:3000]


def _trusted(page) -> None:
    """The status bar's trust item says every code cell is trusted (checked before any cell
    runs: a cell's own new outputs are always trusted)."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-StatusItem-trust')]"
        ".some(e => e.title.startsWith('Notebook'))",
        timeout=60_000,
    )
    titles = page.eval_on_selector_all(".jp-StatusItem-trust", "els => els.map(e => e.title)")
    assert any(t.startswith("Notebook trusted") for t in titles), titles


def _no_news_question(page, lab) -> None:
    """The news question is off in the settings the server gives the page, and not shown."""
    base, token = lab
    plugin = "@jupyterlab/apputils-extension:notification"
    with urllib.request.urlopen(f"{base}/lab/api/settings/{plugin}?token={token}", timeout=30) as r:
        schema = json.load(r)["schema"]
    assert schema["properties"]["fetchNews"]["default"] == "false", schema["properties"]
    shown = page.locator(".Toastify__toast", has_text="Jupyter news").all_inner_texts()
    assert not shown, shown


def _committed_images(path: Path) -> int:
    nb = json.loads(path.read_text())
    return sum(
        "image/png" in out.get("data", {})
        for cell in nb["cells"]
        for out in cell.get("outputs", [])
    )


def test_notebook_01_figures_render(browser, lab):
    page, errors = _open(browser, lab, TOUR_NB)
    try:
        images = page.locator(".jp-OutputArea-output img")
        images.first.wait_for(timeout=60_000)
        # every committed figure is decoded by the browser into a real image
        for _ in range(60):
            sizes = page.eval_on_selector_all(
                ".jp-OutputArea-output img",
                "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])",
            )
            if sizes and all(c for c, _, _ in sizes):
                break
            page.wait_for_timeout(500)
        assert len(sizes) == _committed_images(NOTEBOOKS / TOUR_NB) >= 2, sizes
        assert all(w > 100 and h > 100 for _, w, h in sizes), sizes
        _trusted(page)
        _no_news_question(page, lab)  # by now the page has long been restored
        _no_error_outputs(page)
        assert not errors, errors
    finally:
        page.close()


def _wait_idle(page, timeout: int = 240_000) -> None:
    """Until the notebook's kernel is started and idle (the status bar says so)."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]"
        ".some(e => /\\|\\s*Idle/.test(e.innerText))",
        timeout=timeout,
    )


def _run_cell(page, cell, timeout: int = 240_000) -> None:
    """Select ``cell`` (command mode), run it with Shift+Enter, wait until it has run."""
    _wait_idle(page)
    cell.scroll_into_view_if_needed()
    cell.locator(".jp-InputPrompt").click()
    page.keyboard.press("Escape")
    page.keyboard.press("Shift+Enter")
    prompt = cell.locator(".jp-InputPrompt")
    page.wait_for_function(
        "el => /\\[\\d+\\]/.test(el.innerText)", arg=prompt.element_handle(), timeout=timeout
    )


_EXPLORER_IMAGES = "[...document.querySelectorAll('.grok-explorer img')]"


def _sources(page) -> list[str]:
    return page.evaluate(f"() => {_EXPLORER_IMAGES}.map(e => e.getAttribute('src') || '')")


def _wait_redrawn(page, before: list[str]) -> None:
    """Until at least one of the explorer's images differs from ``before``."""
    page.wait_for_function(
        f"before => {_EXPLORER_IMAGES}.some((e, i) => (e.getAttribute('src') || '') !== before[i])",
        arg=before,
        timeout=120_000,
    )


def _natural_aspect(page) -> None:
    """Each explorer figure is shown at its PNG's aspect ratio (not stretched to its
    neighbour's height) and with fewer CSS pixels than the PNG has (sharp when zoomed or on a
    HiDPI screen)."""
    sizes = page.evaluate(
        f"() => {_EXPLORER_IMAGES}.map(e => [e.naturalWidth, "
        "e.naturalHeight, e.getBoundingClientRect().width, "
        "e.getBoundingClientRect().height])"
    )
    assert len(sizes) == 3, sizes
    for nw, nh, w, h in sizes:
        assert w > 100 and abs((w / h) / (nw / nh) - 1) < 0.02, sizes
        assert nw >= 1.5 * w, sizes


def _shots() -> Path:
    shots = Path(os.environ.get("GROK_FLAX_SCREENSHOTS", ROOT / "runs" / "browser"))
    shots.mkdir(parents=True, exist_ok=True)
    return shots


def test_routing_explorer_runs_and_redraws(browser, lab, tmp_path):
    page, errors = _open(browser, lab, EXPLORER_NB, height=2000)  # the whole explorer in view
    ok = False
    try:
        cells = page.locator(".jp-Notebook .jp-CodeCell")
        _trusted(page)
        _run_cell(page, cells.first)  # imports and the demo model
        explorer = page.locator(".jp-CodeCell", has_text="viz.RoutingExplorer(model")
        _run_cell(page, explorer.first)
        page.wait_for_selector(".grok-explorer", timeout=60_000)
        page.wait_for_function(
            f"() => {_EXPLORER_IMAGES}.filter(e => e.naturalWidth > 100).length >= 3",
            timeout=240_000,
        )
        _natural_aspect(page)
        before = _sources(page)
        status_before = page.locator(".grok-explorer-status").inner_text()

        # pick another token in the dropdown, then move the layer slider one step right
        page.locator(".grok-explorer-token select").select_option(index=1)
        _wait_redrawn(page, before)
        after_token = _sources(page)
        handle = page.locator(
            ".grok-explorer-layer .noUi-handle, .grok-explorer-layer [role='slider']"
        ).first
        handle.focus()
        page.keyboard.press("ArrowRight")
        page.wait_for_function(
            "s => document.querySelector('.grok-explorer-status').innerText.includes(s)",
            arg="layer 1",
            timeout=120_000,
        )
        _wait_redrawn(page, after_token)
        status_after = page.locator(".grok-explorer-status").inner_text()
        assert "layer 0" in status_before and "layer 1" in status_after, (
            status_before,
            status_after,
        )
        assert status_after != status_before
        page.locator(".grok-explorer").screenshot(path=str(_shots() / "routing_explorer.png"))
        _no_error_outputs(page)
        assert not errors, errors
        ok = True
    finally:
        if not ok:  # what the page showed when it failed
            page.screenshot(path=str(_shots() / "routing_explorer_failed.png"), full_page=True)
        page.close()
