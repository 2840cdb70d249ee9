"""Test setup: 8 simulated CPU devices for mesh tests; paths to ../shared."""

import os
import shutil
import socket
import sys
import warnings
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
warnings.filterwarnings("ignore", category=DeprecationWarning)

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "reference"
DATA = ROOT / "tests" / "data"  # reference cases shipped with the repo
TOKENIZER = SHARED / "grok-1" / "tokenizer.model"
TINY = DATA / "grok1-tiny"  # the shared grok1-tiny case, carried in the repo


def reference_cases():
    """Every case written by the original code: tests/data/* (shipped), then any other folder
    under ../shared/reference (each has meta.json + logits.npy)."""
    cases = {}
    for root in (REFERENCE, DATA):
        if root.is_dir():
            cases.update({p.name: p for p in root.iterdir() if (p / "meta.json").is_file()})
    return [cases[name] for name in sorted(cases)]


@pytest.fixture
def tokenizer_path():
    if not TOKENIZER.is_file():
        pytest.skip(
            f"needs the released tokenizer, {TOKENIZER}: not present (../shared/ is "
            f"described in the README's Development section)"
        )
    return TOKENIZER


@pytest.fixture
def standin_qw(monkeypatch):
    """A stand-in ``__main__.QuantizedWeight8bit`` so that test-only pickle calls work."""
    cls = type("QuantizedWeight8bit", (), {"__module__": "__main__"})
    monkeypatch.setattr(sys.modules["__main__"], "QuantizedWeight8bit", cls, raising=False)
    return cls


@pytest.fixture
def reference_ckpt() -> Path:
    """The tensor files of the tiny checkpoint written by the original code (shipped in
    tests/data), or skip saying where they were looked for."""
    path = TINY / "checkpoints" / "ckpt-0"
    if not path.is_dir():
        pytest.skip(f"reference checkpoint not found at {path}")
    return path


# --- a real browser: Playwright driving Debian's Chromium (tests/test_browser.py, test_book.py)


def chromium_binary() -> str | None:
    named = os.environ.get("GROK_FLAX_CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
    )
    chromium = chromium_binary()
    if chromium is None and os.environ.get("CI") == "true":
        pytest.fail("CI must run the browser test: .ci/run installs Debian's chromium first")
    if chromium is None:
        pytest.skip(
            "no Chromium binary: install Debian's chromium (apt-get install chromium) "
            "or set GROK_FLAX_CHROMIUM to one"
        )
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        try:
            yield b
        finally:
            b.close()
