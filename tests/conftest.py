"""Test setup: 8 simulated CPU devices for mesh tests; paths to ../shared."""

import os
import warnings
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
warnings.filterwarnings("ignore", category=DeprecationWarning)

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "reference"
TOKENIZER = SHARED / "grok-1" / "tokenizer.model"


def reference_cases():
    """Every case folder under ../shared/reference (each has meta.json + logits.npy)."""
    if not REFERENCE.is_dir():
        return []
    return sorted(p for p in REFERENCE.iterdir() if (p / "meta.json").is_file())


@pytest.fixture
def tokenizer_path():
    if not TOKENIZER.is_file():
        pytest.skip(f"{TOKENIZER} not present")
    return TOKENIZER
