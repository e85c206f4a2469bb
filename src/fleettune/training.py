"""Local optimisation: optimizers, learning-rate schedules and the training step every role uses."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from fleettune.runtime.memory import ActivationMeter


def trainable_parameters(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


LOCAL_OPTIMIZERS = ("adamw", "sgd")


@dataclass(frozen=True)
class LocalOptimizer:
    """The optimizer every party trains its own parameters with: AdamW (decoupled weight decay, two moments per
    parameter), or plain SGD (weight decay added to the gradient, no state), the usual client optimizer under
    an adaptive server optimizer (Reddi et al.), where the clients' steps are the server's pseudo-gradients."""

    name: str = "adamw"
    weight_decay: float = 0.01

    def __post_init__(self) -> None:
        if self.name not in LOCAL_OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.name!r}; expected one of {', '.join(LOCAL_OPTIMIZERS)}")


DEFAULT_LOCAL = LocalOptimizer()  # AdamW with weight decay 0.01


def make_optimizer(params: Iterable[nn.Parameter], lr: float, local: LocalOptimizer) -> torch.optim.Optimizer:
    if local.name == "sgd":
        return torch.optim.SGD(list(params), lr=lr, weight_decay=local.weight_decay)
    return torch.optim.AdamW(list(params), lr=lr, weight_decay=local.weight_decay)


def lr_factor(schedule: str, step: int, total_steps: int, warmup_fraction: float = 0.3) -> float:
    """Multiplier of the base rate at `step` (0-based): constant, or linear warm-up then cosine decay."""
    if schedule == "constant" or total_steps <= 1:
        return 1.0
    warmup = max(1, int(total_steps * warmup_fraction))
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = base_lr * factor


def clear_grads(module: nn.Module) -> None:
    for p in module.parameters():
        p.grad = None


def backward_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, max_grad_norm: float | None = 1.0) -> None:
    loss.backward()
    if max_grad_norm is not None:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def metered_loss(meter: ActivationMeter, compute: object) -> torch.Tensor:
    """Run `compute()` (a forward that returns a loss) with saved activations measured."""
    assert callable(compute)
    with meter.track():
        loss = compute()
    return loss
