"""With dropout on everywhere (hidden, attention and LoRA), the shared server trains exactly like per-client copies.

A pretrained model loads in eval mode; every party must switch its stage to training mode itself, or its
dropout silently stays off. These runs would differ if one server's stage skipped that."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleettune.config import build_config
from fleettune.runner import execute, prepare
from fleettune.schemes import SchemeResult
from tests.schemes.conftest import save_tiny_bert, tiny_flags


@pytest.fixture(scope="module")
def dropout_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert-dropout"), dropout=0.1)


def _run(model_dir: Path, data_dir: Path, scheme: str) -> SchemeResult:
    flags = tiny_flags(model_dir, data_dir, scheme, lora__dropout=0.1, rounds=2, lr_schedule="onecycle", switch_ms=1.0)
    return execute(prepare(build_config(flags=flags)))


def test_mesfl_equals_splitfed_with_dropout_on(dropout_model_dir: Path, tiny_data_dir: Path) -> None:
    shared = _run(dropout_model_dir, tiny_data_dir, "mesfl")
    copies = _run(dropout_model_dir, tiny_data_dir, "splitfed")
    assert shared.step_losses == pytest.approx(copies.step_losses, abs=1e-6)
    assert shared.final.scores.accuracy == copies.final.scores.accuracy
