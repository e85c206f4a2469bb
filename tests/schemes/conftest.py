"""Fixtures for scheme tests: a tiny BERT saved as a local model folder, and a small data set of our own."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import BertConfig, BertModel

from fleettune.config import build_config
from fleettune.models.catalog import load_tokenizer, resolve_model
from fleettune.runner import execute, prepare
from fleettune.schemes import SchemeResult

DEVICES = ["fridge", "thermostat", "camera", "door lock", "weather station", "light"]
STATES = {
    "normal": ["reports steady readings", "is idle and healthy", "checked in on time"],
    "fault": ["reports a sensor fault", "lost calibration again", "returns impossible values"],
    "attack": ["receives a flood of requests", "sees repeated bad passwords", "runs an unknown script"],
}


def save_tiny_bert(folder: Path, dropout: float = 0.0) -> Path:
    """A 4-layer BERT (hidden 32) with MiniLM's tokenizer, saved as a model folder."""
    tokenizer = load_tokenizer(resolve_model("minilm"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the same weights in every session, whatever ran before
        backbone = BertModel(config)
    backbone.save_pretrained(folder)  # a backbone, like the sentence-transformer models
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT with dropout off."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """96 training and 30 test sentences about device health, three labels."""
    folder = tmp_path_factory.mktemp("tiny-data")
    rng = random.Random(7)

    def rows(n: int) -> list[str]:
        out = ["text,label"]
        for i in range(n):
            label = list(STATES)[i % 3]
            out.append(f"the {rng.choice(DEVICES)} {rng.choice(STATES[label])},{label}")
        return out

    (folder / "train.csv").write_text("\n".join(rows(96)) + "\n")
    (folder / "test.csv").write_text("\n".join(rows(30)) + "\n")
    return folder


RunScheme = Callable[..., SchemeResult]


def tiny_flags(model_dir: Path, data_dir: Path, scheme: str, **overrides: Any) -> dict[str, Any]:
    """Flags of a small run on the tiny model and data; overrides use `__` for dots (`lora__rank=8`)."""
    flags: dict[str, Any] = {
        "scheme": scheme,
        "model": str(model_dir),
        "dataset": "local",
        "data_dir": str(data_dir),
        "batch_size": 8,
        "max_length": 16,
        "lora.rank": 4,
        "lora.dropout": 0.0,
        "lr_schedule": "constant",
        "switch_ms": 1.7,  # a fixed switch cost keeps virtual times comparable between runs
    }
    flags.update({k.replace("__", "."): v for k, v in overrides.items()})
    return flags


@pytest.fixture
def run_scheme(tiny_model_dir: Path, tiny_data_dir: Path) -> RunScheme:
    def run(scheme: str, **overrides: Any) -> SchemeResult:
        return execute(prepare(build_config(flags=tiny_flags(tiny_model_dir, tiny_data_dir, scheme, **overrides))))

    return run
