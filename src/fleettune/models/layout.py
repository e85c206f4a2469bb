"""Finds the parts of a Hugging Face task model that a split needs, from its structure alone."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from transformers import PreTrainedModel

from fleettune.errors import ModelError


@dataclass(frozen=True)
class StackLayout:
    """Dotted paths (relative to the task model) of everything a split cuts or keeps.

    `embeddings` is the backbone child that turns token ids into the first hidden state;
    `layers` is the ModuleList of transformer blocks; `after_stack` are backbone children with
    weights that run after the last block (a pooler, a final norm); `heads` are task-model
    children outside the backbone (classifier, score, lm_head, dropout).
    """

    backbone: str
    embeddings: str
    layers: str
    after_stack: tuple[str, ...]
    heads: tuple[str, ...]
    num_layers: int
    # An encoder's embedding module adds positions and a norm, so it must be bypassed on the
    # server; a decoder's is a bare token table the backbone skips when given inputs_embeds.
    embeddings_add_positions: bool

    @property
    def layer_prefix(self) -> str:
        return f"{self.layers}."


def _child_containing(parent: nn.Module, target: nn.Module) -> str | None:
    for name, child in parent.named_children():
        if child is target or any(m is target for m in child.modules()):
            return name
    return None


def find_layout(model: PreTrainedModel) -> StackLayout:
    """Locate backbone, embeddings, layer stack, post-stack modules and heads of `model`."""
    prefix = getattr(model, "base_model_prefix", "")
    backbone = getattr(model, prefix, None) if prefix else None
    if not isinstance(backbone, nn.Module):
        raise ModelError(f"{type(model).__name__} has no backbone at '{prefix}'; expected a transformers model")
    num_layers = getattr(model.config, "num_hidden_layers", None)
    if not isinstance(num_layers, int) or num_layers < 2:
        raise ModelError(
            f"{type(model).__name__}: config.num_hidden_layers is {num_layers!r}; a split needs at least 2 layers"
        )
    stacks = [
        name
        for name, module in backbone.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) == num_layers
    ]
    if not stacks:
        raise ModelError(f"{type(model).__name__}: found no list of {num_layers} transformer layers to split")
    layers = min(stacks, key=lambda n: n.count("."))
    embed_table = model.get_input_embeddings()
    embeddings = _child_containing(backbone, embed_table)
    if embeddings is None:
        raise ModelError(f"{type(model).__name__}: input embeddings are not inside the backbone")
    stack_child = layers.split(".")[0]
    after = tuple(
        name
        for name, child in backbone.named_children()
        if name not in (embeddings, stack_child) and any(True for _ in child.parameters())
    )
    heads = tuple(name for name, _ in model.named_children() if name != prefix)
    return StackLayout(
        backbone=prefix,
        embeddings=f"{prefix}.{embeddings}",
        layers=f"{prefix}.{layers}",
        after_stack=tuple(f"{prefix}.{name}" for name in after),
        heads=heads,
        num_layers=num_layers,
        embeddings_add_positions=getattr(backbone, embeddings) is not embed_table,
    )
