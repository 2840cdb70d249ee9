"""The course website (``make book``): it builds strictly from what is committed, every internal
link of every page leads somewhere, nothing is fetched from elsewhere, and in a real browser
the pages show what they should.

The site is built once per run, by ``make book`` itself, into a temporary folder. The browser
tests serve it over HTTP on a local port and drive Debian's Chromium with Playwright (see
``tests/conftest.py``); screenshots of the landing page and of notebook 04 go to
``runs/browser/`` (or ``GROK_FLAX_SCREENSHOTS``).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import subprocess
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from conftest import ROOT, free_port

pytestmark = pytest.mark.book

BUILD_SECONDS = 180  # the budget for a build on 2 cores
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """``make book`` into a temporary folder: (the site's folder, the build's seconds)."""
    out = tmp_path_factory.mktemp("book") / "site"
    t = time.perf_counter()
    run = subprocess.run(
        ["make", "-s", "book", f"BOOK={out}"], cwd=ROOT, capture_output=True, text=True
    )
    seconds = time.perf_counter() - t
    assert run.returncode == 0, f"make book failed:\n{run.stdout[-4000:]}\n{run.stderr[-8000:]}"
    return out, seconds


def test_the_build_is_strict_and_quick(site):
    out, seconds = site
    makefile = (ROOT / "Makefile").read_text()
    book = makefile.split("\nbook:")[1].split("\n\n")[0]
    assert "sphinx-build -W --keep-going -n" in book  # any warning fails the build
    assert seconds < BUILD_SECONDS, f"the build took {seconds:.0f} s"
    pages = {p.relative_to(out).as_posix() for p in out.rglob("*.html")}
    assert {f"notebooks/{p.stem}.html" for p in NOTEBOOKS} <= pages
    assert {
        "index.html",
        "docs/index.html",
        "docs/api/index.html",
        "docs/api/moe.html",
        "search.html",
    } <= pages
    assert {f"docs/{p.stem}.html" for p in (ROOT / "docs").glob("*.md")} <= pages
    assert any(p.startswith("_modules/grok_flax/") for p in pages)  # source pages


class _Refs(HTMLParser):
    """The URLs a page refers to, and the ids it defines."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name"):
            if a.get(key):
                self.ids.add(a[key])
        for key in ("href", "src"):
            if a.get(key) and (tag != "a" or key == "href"):
                self.urls.append(a[key])


@functools.cache
def _parse(path: Path) -> _Refs:
    refs = _Refs()
    refs.feed(path.read_text(errors="replace"))
    return refs


def test_every_internal_link_leads_to_a_file_and_an_anchor(site):
    out, _ = site
    broken = []
    pages = [p for p in out.rglob("*.html") if p.relative_to(out).parts[0] != "_static"]
    for page in sorted(pages):  # (_static/ holds the theme's template fragments: no pages)
        for url in _parse(page).urls:
            parts = urlsplit(url)
            if parts.scheme or parts.netloc or url.startswith("//"):
                continue  # external: checked below never to be a page resource
            target = page if not parts.path else (page.parent / unquote(parts.path))
            if parts.path.endswith("/"):
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.relative_to(out)}: {url} (no such file)")
            elif parts.fragment and target.suffix == ".html":
                if unquote(parts.fragment) not in _parse(target.resolve()).ids:
                    broken.append(f"{page.relative_to(out)}: {url} (no such anchor)")
    assert not broken, f"{len(broken)} broken internal links:\n" + "\n".join(broken[:40])


def test_nothing_is_fetched_from_elsewhere(site):
    """Scripts, styles, images and fonts come from the site: it reads offline and leaks no
    visit (MathJax is served locally; the notebooks' widgets are replaced by a note)."""
    out, _ = site
    found = []
    for page in out.rglob("*.html"):
        text = page.read_text(errors="replace")
        for tag in re.findall(r"<(?:script|img|link|iframe)\b[^>]*>", text):
            if re.search(r'\b(?:src|href)="(?:https?:)?//', tag) and 'rel="canonical"' not in tag:
                found.append(f"{page.relative_to(out)}: {tag[:160]}")
    assert not found, "\n".join(found[:20])


# --- in a browser --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(site):
    """The built site over HTTP on a free local port: its base URL."""
    out, _ = site
    handler = functools.partial(QuietHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no request log on stderr
        pass


def _shots() -> Path:
    shots = Path(os.environ.get("GROK_FLAX_SCREENSHOTS", ROOT / "runs" / "browser"))
    shots.mkdir(parents=True, exist_ok=True)
    return shots


@pytest.fixture
def page(browser):
    """A page that records console errors and uncaught exceptions; the test asserts none."""
    context = browser.new_context(viewport={"width": 1280, "height": 1600})
    p = context.new_page()
    p.errors = []
    p.on("console", lambda m: m.type == "error" and p.errors.append(f"console: {m.text}"))
    p.on("pageerror", lambda e: p.errors.append(f"page error: {e}"))
    p.on("response", lambda r: r.status >= 400 and p.errors.append(f"{r.status}: {r.url}"))
    yield p
    context.close()


DECODED = "img => img.complete && img.naturalWidth > 0"


@pytest.mark.browser
def test_the_landing_page_shows_the_architecture(page, served):
    page.goto(served + "/")  # the root redirects to the landing page
    page.wait_for_url("**/docs/index.html")
    figure = page.locator("main img[src*='architecture']")
    figure.wait_for()
    assert figure.evaluate(DECODED)
    assert figure.evaluate("img => img.naturalWidth") > 600
    assert page.locator("main a[href*='notebooks/01_tour.html']").count() >= 1
    page.screenshot(path=str(_shots() / "site_landing.png"))
    assert not page.errors, page.errors


def _png_outputs(notebook: Path) -> int:
    nb = json.loads(notebook.read_text())
    return sum("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))


@pytest.mark.browser
def test_notebook_04_shows_its_figures_and_typeset_math(page, served):
    nb = ROOT / "notebooks" / "04_router_and_experts.ipynb"
    page.goto(f"{served}/notebooks/{nb.stem}.html")
    images = page.locator("main img")
    images.first.wait_for()
    page.wait_for_function(
        "() => [...document.querySelectorAll('main img')].every(i => i.complete)"
    )
    decoded = [images.nth(i).evaluate(DECODED) for i in range(images.count())]
    assert decoded.count(True) == len(decoded) == _png_outputs(nb)
    # MathJax (served by the site) has typeset every formula of the page
    formulas = page.locator("main .math").count()
    assert formulas > 0
    page.wait_for_function(
        f"() => document.querySelectorAll('main mjx-container').length >= {formulas}"
    )
    # the box linking the API pages of what the notebook builds
    box = page.locator("main .admonition", has_text="In the library")
    assert box.locator("a[href*='api/moe.html']").count() == 1
    assert "live widget" in page.locator("main").inner_text()  # the explorer's note
    page.screenshot(path=str(_shots() / "site_notebook_04.png"))
    assert not page.errors, page.errors


@pytest.mark.browser
def test_exercise_solutions_are_hidden_until_asked_for(page, served):
    """A solution cell's code is collapsed on the page; the learner's checker cell is not."""
    page.goto(f"{served}/notebooks/10_training.html")
    solutions = page.locator("main .tag_solution")
    solutions.first.wait_for()
    assert solutions.count() == 3
    code = solutions.first.locator(".cell_input pre")
    assert not code.is_visible()  # collapsed
    assert page.locator("main pre", has_text="ch10.blind_spot(my_blind_spot)").first.is_visible()
    solutions.first.locator("details.hide summary").click()
    code.wait_for(state="visible")
    assert "assert ch10.blind_spot(solution_blind_spot)" in code.inner_text()
    assert not page.errors, page.errors


@pytest.mark.browser
def test_the_api_page_of_moe_documents_call_and_links_its_notebook(page, served):
    page.goto(f"{served}/docs/api/moe.html")
    call = page.locator("dt[id='grok_flax.moe.MoE.__call__']")
    call.wait_for()
    assert "__call__" in call.inner_text()
    docstring = call.locator("xpath=following-sibling::dd[1]").inner_text()
    assert "gates/experts [B, T, k] from the router" in docstring
    assert page.locator("main a[href$='notebooks/04_router_and_experts.html']").count() >= 1
    assert page.locator("dt[id='grok_flax.moe.MoE'] a[href*='_modules/grok_flax/moe']").count()
    assert not page.errors, page.errors


@pytest.mark.browser
def test_search_finds_load_checkpoint(page, served):
    page.goto(f"{served}/search.html?q=load_checkpoint")
    results = page.locator("ul.search li")
    results.first.wait_for(timeout=30_000)
    texts = results.all_inner_texts()
    assert any("load_checkpoint" in t for t in texts), texts[:5]
    assert any(
        "checkpoint" in h
        for h in results.locator("a").evaluate_all(
            "links => links.map(a => a.getAttribute('href'))"
        )
    )
    assert not page.errors, page.errors
