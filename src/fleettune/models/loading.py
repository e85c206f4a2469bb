"""Loads a pretrained model as a task model (classifier or causal LM), with a seeded new head."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, PreTrainedModel
from transformers.utils import logging as hf_logging

from fleettune.errors import ModelError
from fleettune.models.catalog import ModelSource, load_tokenizer
from fleettune.models.stages import Task


def load_task_model(
    path: Path, task: Task, *, num_labels: int | None, pad_token_id: int | None, seed: int
) -> PreTrainedModel:
    """The pretrained backbone at `path` with the task's head; a new head is initialised from `seed`
    without touching the global RNG."""
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read a model config in {path}: {str(exc).splitlines()[0]}") from None
    if pad_token_id is not None and getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = pad_token_id
    kwargs: dict[str, object] = {"config": config, "dtype": torch.float32}
    auto: type[AutoModelForSequenceClassification] | type[AutoModelForCausalLM]
    if task is Task.CLASSIFICATION:
        if not num_labels or num_labels < 2:
            raise ModelError(f"classification needs at least 2 labels, got {num_labels}")
        config.num_labels = num_labels
        # A folder fine-tuned for other labels keeps its backbone and gets a new head.
        kwargs["ignore_mismatched_sizes"] = True
        auto = AutoModelForSequenceClassification
    else:
        auto = AutoModelForCausalLM
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity(logging.ERROR)  # the "newly initialized head" notice is expected
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = auto.from_pretrained(path, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load {task.value} model from {path}: {str(exc).splitlines()[0]}") from None
    finally:
        hf_logging.set_verbosity(previous)
    model.eval()
    return model


def task_models(
    source: ModelSource, task: Task, num_labels: int | None, seed: int = 0
) -> Callable[[], PreTrainedModel]:
    """A factory of fresh task models of the resolved model `source`, with its tokenizer's pad id."""
    tokenizer = load_tokenizer(source)
    return partial(
        load_task_model, source.path, task, num_labels=num_labels, pad_token_id=tokenizer.pad_token_id, seed=seed
    )
