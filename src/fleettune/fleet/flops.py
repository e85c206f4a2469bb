"""FLOPs of the client and server stages, counted on the real computation of a training step."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from fleettune.draws import global_rng_kept
from fleettune.models.stages import ClientStage, ServerStage

T = TypeVar("T")


def _cpu_sdpa_flops(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return int(sdpa_flop_count(query, key, value))


def _cpu_sdpa_backward_flops(
    grad_out: Any, query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    return int(sdpa_backward_flop_count(grad_out, query, key, value))


# Torch counts the GPU attention kernels but not the CPU flash kernel that SDPA picks here; without
# these entries attention would silently count as zero on CPU. Same formulas as torch's GPU ones.
_CPU_ATTENTION: dict[Any, Any] = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flops,
}


def _counted(fn: Callable[[], T]) -> tuple[int, T]:
    with FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION) as counter:
        result = fn()
    return int(counter.get_total_flops()), result


def counted(fn: Callable[[], T]) -> tuple[int, T]:
    """FLOPs `fn()` runs, and its result."""
    return _counted(fn)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matrix products and attention `fn()` runs (elementwise ops count zero)."""
    return _counted(fn)[0]


@dataclass(frozen=True)
class StageFlops:
    """FLOPs of one stage for one batch, forward and backward apart."""

    forward: int
    backward: int

    @property
    def total(self) -> int:
        return self.forward + self.backward


def _trainable(module: nn.Module) -> list[torch.Tensor]:
    return [p for p in module.parameters() if p.requires_grad]


@contextmanager
def _training(*stages: nn.Module) -> Iterator[None]:
    """Train mode, as a training step has it (dropout decides which attention kernel runs, and so the FLOPs),
    with the global RNG dropout draws from left where it was; each stage's mode is put back after."""
    modes = [[m.training for m in stage.modules()] for stage in stages]
    try:
        with global_rng_kept():
            for stage in stages:
                stage.train()
            yield
    finally:
        for stage, before in zip(stages, modes, strict=True):
            for module, training in zip(stage.modules(), before, strict=True):
                module.training = training


def measure_split_flops(
    client: ClientStage,
    server: ServerStage,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
) -> tuple[StageFlops, StageFlops]:
    """(client, server) FLOPs of one split training step on this batch, each phase counted alone.

    The phases run in the step's order: client forward, server forward, server backward (which
    yields the gradient of the cut tensor), client backward driven by that gradient.
    """
    with _training(client, server):
        client_fwd, hidden = _counted(lambda: client(input_ids, attention_mask))  # (B, T, H)
        received = hidden.detach().requires_grad_(True)  # the server's own copy of the cut tensor
        server_fwd, loss = _counted(lambda: server(received, attention_mask, labels).loss)
        # autograd.grad runs the same products as .backward() but leaves every parameter's .grad alone.
        server_params = _trainable(server)
        server_bwd, grads = _counted(lambda: torch.autograd.grad(loss, [received, *server_params], allow_unused=True))
        client_params = _trainable(client)
        client_bwd = 0
        if client_params:  # a client with nothing to train sends activations but runs no backward
            client_bwd = count_flops(
                lambda: torch.autograd.grad(hidden, client_params, grad_outputs=grads[0], allow_unused=True)
            )
        return StageFlops(client_fwd, client_bwd), StageFlops(server_fwd, server_bwd)
