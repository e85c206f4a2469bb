"""With dropout on everywhere (hidden, attention and LoRA), the shared server trains exactly like per-client copies.

A pretrained model loads in eval mode; every party must switch its stage to training mode itself, or its
dropout silently stays off. These runs would differ if one server's stage skipped that."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transformers import BertConfig, BertModel

from fleettune.config import build_config
from fleettune.models.catalog import load_tokenizer, resolve_model
from fleettune.runner import execute, prepare
from fleettune.schemes import SchemeResult


@pytest.fixture(scope="module")
def dropout_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-bert-dropout")
    tokenizer = load_tokenizer(resolve_model("minilm"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _run(model_dir: Path, data_dir: Path, scheme: str, **extra: Any) -> SchemeResult:
    flags: dict[str, Any] = {
        "scheme": scheme,
        "model": str(model_dir),
        "dataset": "local",
        "data_dir": str(data_dir),
        "batch_size": 8,
        "max_length": 16,
        "lora.rank": 4,
        "lora.dropout": 0.1,
        "rounds": 2,
        "switch_ms": 1.0,
        **extra,
    }
    return execute(prepare(build_config(flags=flags)))


def test_mesfl_equals_splitfed_with_dropout_on(dropout_model_dir: Path, tiny_data_dir: Path) -> None:
    shared = _run(dropout_model_dir, tiny_data_dir, "mesfl")
    copies = _run(dropout_model_dir, tiny_data_dir, "splitfed")
    assert shared.step_losses == pytest.approx(copies.step_losses, abs=1e-6)
    assert shared.final.scores.accuracy == copies.final.scores.accuracy
