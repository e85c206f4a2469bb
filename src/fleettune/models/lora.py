"""LoRA settings: which projections of the transformer layers get adapters, with what rank."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from peft import LoraConfig
from torch import nn

from fleettune.errors import ModelError
from fleettune.models.layout import StackLayout

# Projection names seen in each family's layers; the first set whose names a model's layer
# contains wins. Attention and feed-forward projections, as in the case study's LoRA set-up.
DEFAULT_TARGETS: tuple[tuple[str, ...], ...] = (
    ("query", "key", "value", "dense"),  # BERT, RoBERTa, ELECTRA
    ("q", "k", "v", "o", "dense"),  # MPNet
    ("q_proj", "k_proj", "v_proj", "o_proj"),  # Llama, Mistral, Qwen2
    ("q_lin", "k_lin", "v_lin", "out_lin"),  # DistilBERT
)


@dataclass(frozen=True)
class LoraSpec:
    """Rank, scaling, dropout and target projection names (None: the family's default)."""

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.1
    targets: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ModelError(f"lora rank must be >= 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ModelError(f"lora dropout must be in [0, 1), got {self.dropout}")


def _linear_leaf_names(layer: nn.Module) -> set[str]:
    return {name.rsplit(".", 1)[-1] for name, m in layer.named_modules() if isinstance(m, nn.Linear)}


def resolve_targets(layer: nn.Module, requested: Sequence[str] | None) -> tuple[str, ...]:
    """The projection names to adapt in `layer`: the requested ones (all must exist) or a default."""
    present = _linear_leaf_names(layer)
    if requested:
        missing = sorted(set(requested) - present)
        if missing:
            raise ModelError(f"lora target modules {missing} are not in the model's layers; found {sorted(present)}")
        return tuple(requested)
    for family in DEFAULT_TARGETS:
        hit = tuple(name for name in family if name in present)
        if len(hit) >= 2:
            return hit
    raise ModelError(f"no default LoRA targets for layers with projections {sorted(present)}; set them")


def lora_config(
    spec: LoraSpec,
    layout: StackLayout,
    targets: Sequence[str],
    trainable_heads: Sequence[str],
    layers: Sequence[int] | None = None,
) -> LoraConfig:
    """A PEFT config adapting `targets` inside the layer stack only (never the head's own linears),
    and only in the `layers` given (indices as the model numbers them; None: every layer)."""
    names = "|".join(re.escape(t) for t in targets)
    indices = r"\d+" if layers is None else "(?:" + "|".join(str(i) for i in layers) + ")"
    pattern = rf"{re.escape(layout.layers)}\.{indices}\.(?:.*\.)?(?:{names})"
    return LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,  # type: ignore[arg-type]  # PEFT accepts floats; its hint says int
        lora_dropout=spec.dropout,
        target_modules=pattern,
        modules_to_save=list(trainable_heads) or None,
        bias="none",
    )
