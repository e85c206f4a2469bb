"""Loads a pretrained model as a task model (classifier or causal LM), with a seeded new head."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.utils import logging as hf_logging

from fleettune.draws import global_rng_kept
from fleettune.errors import ModelError
from fleettune.models.catalog import EXPECTED_FOLDER, ModelSource, describe_error, load_tokenizer
from fleettune.models.stages import Task

__all__ = ["check_max_length", "load_model_config", "load_task_model", "position_limit", "task_models"]

_WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json")
_EXPECTED_WEIGHTS = "expected weights written by transformers' save_pretrained (model.safetensors or pytorch_model.bin)"
# Model types whose position ids start after the padding index, so that many positions (plus one) go unused.
_POSITIONS_AFTER_PADDING = frozenset(
    {
        "camembert",
        "data2vec-text",
        "ibert",
        "longformer",
        "mpnet",
        "roberta",
        "roberta-prelayernorm",
        "xlm-roberta",
        "xlm-roberta-xl",
        "xmod",
    }
)
_FIXED_PADDING_INDEX = {"mpnet": 1}


def load_task_model(
    path: Path, task: Task, *, num_labels: int | None, pad_token_id: int | None, seed: int
) -> PreTrainedModel:
    """The pretrained backbone at `path` with the task's head; a new head is initialised from `seed`
    without touching the global RNG."""
    config = load_model_config(path)
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
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a run builds many models: no loading bar for each
    try:
        with global_rng_kept(seed):
            # With output_loading_info, from_pretrained returns (model, info); its stubs do not say so.
            model, info = auto.from_pretrained(path, output_loading_info=True, **kwargs)  # type: ignore[misc]
    except (OSError, ValueError, KeyError, EOFError, SafetensorError, pickle.UnpicklingError) as exc:
        raise ModelError(
            f"model folder {path}: cannot load a {task.value} model from {_weight_files(path)} "
            f"({describe_error(exc)}); {_EXPECTED_WEIGHTS}"
        ) from None
    finally:
        hf_logging.set_verbosity(previous)
        if bars:
            hf_logging.enable_progress_bar()
    _check_backbone_loaded(path, model, info)
    model.eval()
    return model


def _check_backbone_loaded(path: Path, model: PreTrainedModel, info: dict[str, object]) -> None:
    """Refuse a folder whose weights do not fill the backbone its config.json describes.

    transformers initialises such weights at random and goes on (a new head must be, which is why its
    size check is off): a config with more layers or a wider hidden size than the weights would then
    train a partly random backbone without a word."""
    prefix = f"{model.base_model_prefix}."
    problems: list[str] = []
    for entry in sorted(_entries(info, "mismatched_keys"), key=str):
        key, *shapes = entry if isinstance(entry, tuple) else (entry,)
        if str(key).startswith(prefix):
            found, wanted = (tuple(shape) for shape in shapes) if len(shapes) == 2 else ("?", "?")
            problems.append(f"weight {key} is {found} in the weights, {wanted} by config.json")
    missing = sorted(str(key) for key in _entries(info, "missing_keys") if str(key).startswith(prefix))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        problems.append(f"weight {missing[0]} is missing{more}")
    if problems:
        raise ModelError(
            f"model folder {path}: the weights do not match config.json: {problems[0]}; "
            "expected weights saved with this config.json"
        )


def _entries(info: dict[str, object], name: str) -> list[object]:
    found = info.get(name)
    return list(found) if isinstance(found, (set, list, tuple)) else []


def task_models(
    source: ModelSource, task: Task, num_labels: int | None, seed: int = 0
) -> Callable[[], PreTrainedModel]:
    """A factory of fresh task models of the resolved model `source`, with its tokenizer's pad id."""
    tokenizer = load_tokenizer(source)
    return partial(
        load_task_model, source.path, task, num_labels=num_labels, pad_token_id=tokenizer.pad_token_id, seed=seed
    )


def load_model_config(path: Path) -> PretrainedConfig:
    """The transformers config of the model folder at `path`; a ModelError if transformers cannot read it."""
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(
            f"model folder {path}: transformers cannot read config.json ({describe_error(exc)}); {EXPECTED_FOLDER}"
        ) from None


def position_limit(config: PretrainedConfig) -> int | None:
    """Most tokens per sequence the model's position table covers, or None if its config sets no limit.

    That is `max_position_embeddings`, less the padding index plus one for models (RoBERTa, MPNet) whose
    position ids start after the padding index: MPNet's 514 positions take 512 tokens.
    """
    limit = getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int):
        return None
    if config.model_type not in _POSITIONS_AFTER_PADDING:
        return limit
    padding_index = _FIXED_PADDING_INDEX.get(config.model_type, getattr(config, "pad_token_id", None))
    return limit - (padding_index if isinstance(padding_index, int) else 1) - 1


def check_max_length(source: ModelSource, max_length: int) -> None:
    """Refuse a `max_length` longer than the sequences the model `source` can take."""
    limit = position_limit(load_model_config(source.path))
    if limit is not None and max_length > limit:
        raise ModelError(
            f"max_length {max_length}: model {source.name} takes at most {limit} tokens per sequence; "
            f"expected max_length <= {limit}"
        )


def _weight_files(path: Path) -> str:
    names = sorted({file.name for pattern in _WEIGHT_PATTERNS for file in path.glob(pattern)})
    return ", ".join(names) if names else "no weight files"
