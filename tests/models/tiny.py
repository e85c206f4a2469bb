"""Tiny random-init models of each supported family, built locally (no downloads)."""

from __future__ import annotations

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    MPNetConfig,
    MPNetForSequenceClassification,
    PreTrainedModel,
)

from fleettune.models.stages import Task

LAYERS = 4
VOCAB = 100
PAD = 0


def tiny_model(kind: str, seed: int = 0) -> tuple[PreTrainedModel, Task]:
    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=LAYERS, intermediate_size=64)
    model: PreTrainedModel
    if kind == "bert":
        model = BertForSequenceClassification(BertConfig(num_attention_heads=2, num_labels=3, **common))
        task = Task.CLASSIFICATION
    elif kind == "mpnet":
        model = MPNetForSequenceClassification(MPNetConfig(num_attention_heads=2, num_labels=3, **common))
        task = Task.CLASSIFICATION
    elif kind == "llama-cls":
        config = LlamaConfig(num_attention_heads=4, num_key_value_heads=2, num_labels=3, pad_token_id=PAD, **common)
        model = LlamaForSequenceClassification(config)
        task = Task.CLASSIFICATION
    elif kind == "llama-lm":
        config = LlamaConfig(
            num_attention_heads=4, num_key_value_heads=2, pad_token_id=PAD, tie_word_embeddings=True, **common
        )
        model = LlamaForCausalLM(config)
        task = Task.CAUSAL_LM
    else:
        raise ValueError(kind)
    model.eval()
    return model, task


def random_batch(task: Task, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids (pad id at padded positions), mask, and labels for `task`."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    ids = ids.masked_fill(mask == 0, PAD)
    labels = torch.tensor([0, 2, 1]) if task is Task.CLASSIFICATION else ids.masked_fill(mask == 0, -100)
    return ids, mask, labels
