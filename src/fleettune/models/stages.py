"""Client and server stages of a split model, and the unsplit model they must agree with."""

from __future__ import annotations

import copy
import enum
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from peft import PeftModel, get_peft_model
from torch import nn
from transformers import PreTrainedModel

from fleettune.errors import ModelError
from fleettune.models.layout import StackLayout, find_layout
from fleettune.models.lora import LoraSpec, lora_config, resolve_targets
from fleettune.models.shells import InputsEmbedsPassthrough, get_layers, get_module, with_replaced


class Task(str, enum.Enum):
    CLASSIFICATION = "classification"
    CAUSAL_LM = "causal-lm"


@dataclass
class StageOutput:
    loss: torch.Tensor
    logits: torch.Tensor


def task_loss(task: Task, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy: per sequence for classification, per next token for causal LM."""
    if task is Task.CLASSIFICATION:
        return F.cross_entropy(logits, labels)
    # logits (B, T, V) predict token t+1 from position t; labels (B, T) use -100 for ignored.
    shifted = labels[:, 1:]
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), shifted.reshape(-1), ignore_index=-100)


def _last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(attention_mask.size(1), device=attention_mask.device)
    return (attention_mask.long() * positions).argmax(dim=-1)  # (B,)


def _trainable_heads(model: nn.Module, layout: StackLayout, task: Task) -> tuple[str, ...]:
    if task is Task.CAUSAL_LM:
        return ()  # the LM head is tied or huge: kept frozen
    return tuple(h for h in layout.heads if any(True for _ in get_module(model, h).parameters()))


def _with_layer_count(model: PreTrainedModel, layout: StackLayout, count: int) -> None:
    # Some backbones loop over layers[: config.num_hidden_layers]: give the stage its own config.
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = count
    config.use_cache = False  # training never decodes; a KV cache would index layers globally
    model.config = config
    backbone = get_module(model, layout.backbone)
    if hasattr(backbone, "config"):
        backbone.__dict__["config"] = config


class _Stage(nn.Module):
    def __init__(self, peft: PeftModel, layout: StackLayout, task: Task, first_layer: int, last_layer: int):
        super().__init__()
        self.peft = peft
        self.layout = layout
        self.task = task
        self.first_layer = first_layer  # global index of this stage's first transformer layer
        self.last_layer = last_layer  # one past its last

    @property
    def inner(self) -> nn.Module:
        inner = self.peft.base_model.model
        assert isinstance(inner, nn.Module)
        return inner

    @property
    def backbone(self) -> nn.Module:
        return get_module(self.inner, self.layout.backbone)


class ClientStage(_Stage):
    """Embeddings and layers [0, cut) with their LoRA adapter: token ids in, cut activations out."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state  # (B, T, H)


class ServerStage(_Stage):
    """Layers [cut, L), head and loss with their LoRA adapter: cut activations in, loss out."""

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> StageOutput:
        logits = self.logits(hidden, attention_mask)
        return StageOutput(task_loss(self.task, logits, labels), logits)

    def logits(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.layout.embeddings_add_positions and self.task is Task.CLASSIFICATION:
            # An encoder task model pools and classifies by itself given inputs_embeds.
            return self.inner(inputs_embeds=hidden, attention_mask=attention_mask).logits
        states = self.backbone(inputs_embeds=hidden, attention_mask=attention_mask).last_hidden_state
        head = get_module(self.inner, self.layout.heads[-1])
        if self.task is Task.CAUSAL_LM:
            return head(states)  # (B, T, V)
        # Decoder classification: score the last real token of each (right-padded) sequence.
        last = _last_token_index(attention_mask)
        pooled = states[torch.arange(states.size(0), device=states.device), last]  # (B, H)
        return head(pooled)


class FullModel(nn.Module):
    """The unsplit model with one LoRA adapter: what `central` and `fl` train, and the split's reference."""

    def __init__(self, peft: PeftModel, layout: StackLayout, task: Task):
        super().__init__()
        self.peft = peft
        self.layout = layout
        self.task = task

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> StageOutput:
        logits = self.logits(input_ids, attention_mask)
        return StageOutput(task_loss(self.task, logits, labels), logits)

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.peft(input_ids=input_ids, attention_mask=attention_mask).logits


def _targets(model: PreTrainedModel, layout: StackLayout, spec: LoraSpec) -> tuple[str, ...]:
    first_layer = get_layers(model, layout.layers)[0]
    return resolve_targets(first_layer, spec.targets)


def full_model(model: PreTrainedModel, spec: LoraSpec, task: Task) -> FullModel:
    """Wrap the whole model with LoRA (the model is modified in place)."""
    layout = find_layout(model)
    model.config.use_cache = False
    config = lora_config(spec, layout, _targets(model, layout, spec), _trainable_heads(model, layout, task))
    return FullModel(get_peft_model(model, config), layout, task)


def check_cut(cut: int, num_layers: int) -> None:
    if not 1 <= cut < num_layers:
        raise ModelError(f"cut_layer must be in 1..{num_layers - 1} for a {num_layers}-layer model, got {cut}")


def client_stage(
    model: PreTrainedModel, cut: int, spec: LoraSpec, task: Task, targets: tuple[str, ...] | None = None
) -> ClientStage:
    """Embeddings + layers [0, cut) of `model` with LoRA; shares (not copies) their weights."""
    layout = find_layout(model)
    check_cut(cut, layout.num_layers)
    targets = targets or _targets(model, layout, spec)
    layers = get_layers(model, layout.layers)
    replacements: dict[str, nn.Module] = {layout.layers: nn.ModuleList(list(layers)[:cut])}
    replacements.update({path: nn.Identity() for path in (*layout.after_stack, *layout.heads)})
    shell = with_replaced(model, replacements)
    assert isinstance(shell, PreTrainedModel)
    _with_layer_count(shell, layout, cut)
    config = lora_config(spec, layout, targets, ())
    return ClientStage(get_peft_model(shell, config), layout, task, 0, cut)


def server_stage(
    model: PreTrainedModel, cut: int, spec: LoraSpec, task: Task, targets: tuple[str, ...] | None = None
) -> ServerStage:
    """Layers [cut, L) + head of `model` with LoRA; shares (not copies) their weights."""
    layout = find_layout(model)
    check_cut(cut, layout.num_layers)
    targets = targets or _targets(model, layout, spec)
    layers = get_layers(model, layout.layers)
    embeddings: nn.Module = InputsEmbedsPassthrough() if layout.embeddings_add_positions else nn.Identity()
    shell = with_replaced(model, {layout.layers: nn.ModuleList(list(layers)[cut:]), layout.embeddings: embeddings})
    assert isinstance(shell, PreTrainedModel)
    _with_layer_count(shell, layout, layout.num_layers - cut)
    config = lora_config(spec, layout, targets, _trainable_heads(model, layout, task))
    return ServerStage(get_peft_model(shell, config), layout, task, cut, layout.num_layers)


def split_model(model: PreTrainedModel, cut: int, spec: LoraSpec, task: Task) -> tuple[ClientStage, ServerStage]:
    """Both halves of `model` at `cut`. Drop `model` afterwards: each stage keeps only its own weights."""
    # Resolve targets before either stage exists: building one injects LoRA into shared layers.
    targets = _targets(model, find_layout(model), spec)
    return client_stage(model, cut, spec, task, targets), server_stage(model, cut, spec, task, targets)
