"""Shared test fixtures: tiny random-init models built locally, and the path of the shared real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("the shared real data directory (../shared/data beside the repository) is not present")
    return SHARED_DATA


# Torch's first calls are slow and a shared 2-core machine is noisy: no per-example deadline.
from hypothesis import settings  # noqa: E402

settings.register_profile("fleettune", deadline=None, max_examples=50)
settings.load_profile("fleettune")
