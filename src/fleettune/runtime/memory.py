"""Memory meter: bytes a party holds, measured on its live objects."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn


def _tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


@dataclass
class MemoryBreakdown:
    """Peak bytes by category; `total` is what the party needs at its peak."""

    weights: int = 0  # frozen parameters and buffers held
    trainable: int = 0
    gradients: int = 0
    optimizer: int = 0
    activations: int = 0  # peak bytes saved for backward
    received: int = 0  # payload buffers held (adapters, cut tensors)

    @property
    def total(self) -> int:
        return self.weights + self.trainable + self.gradients + self.optimizer + self.activations + self.received

    def peak_with(self, other: MemoryBreakdown) -> MemoryBreakdown:
        return MemoryBreakdown(*(max(a, b) for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True)))

    def as_tuple(self) -> tuple[int, ...]:
        return (self.weights, self.trainable, self.gradients, self.optimizer, self.activations, self.received)


def module_bytes(module: nn.Module) -> tuple[int, int, int]:
    """(frozen weights incl. buffers, trainable parameters, gradients present), each tensor once."""
    seen: set[int] = set()
    frozen = trainable = grads = 0
    for p in module.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if p.requires_grad:
            trainable += _tensor_bytes(p)
        else:
            frozen += _tensor_bytes(p)
        if p.grad is not None:
            grads += _tensor_bytes(p.grad)
    for b in module.buffers():
        if id(b) not in seen:
            seen.add(id(b))
            frozen += _tensor_bytes(b)
    return frozen, trainable, grads


def optimizer_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(
        _tensor_bytes(v) for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)
    )


@dataclass
class ActivationMeter:
    """Tracks the peak bytes of tensors autograd saves for backward while active.

    Each storage counts once however many ops save it or a view of it (a linear and its LoRA
    branch save the same input); a storage is released when its last saved reference is unpacked
    during backward. Parameters are not activations: they are counted as weights.
    """

    current: int = 0
    peak: int = 0
    _live: dict[int, list[int]] = field(default_factory=dict)  # storage ptr -> [refs, bytes]

    @contextmanager
    def track(self, weights: Iterable[torch.Tensor] = ()) -> Iterator[ActivationMeter]:
        """Meter saved tensors inside the block; tensors viewing any of `weights` are not activations."""
        weight_storages = {w.untyped_storage().data_ptr() for w in weights}

        def pack(t: torch.Tensor) -> tuple[int, torch.Tensor]:
            if isinstance(t, nn.Parameter) or t.layout != torch.strided:
                return 0, t
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key == 0 or key in weight_storages:
                return 0, t
            entry = self._live.get(key)
            if entry is None:
                self._live[key] = [1, storage.nbytes()]
                self.current += storage.nbytes()
                self.peak = max(self.peak, self.current)
            else:
                entry[0] += 1
            return key, t

        def unpack(packed: tuple[int, torch.Tensor]) -> torch.Tensor:
            key, t = packed
            entry = self._live.get(key)
            if entry is not None:
                entry[0] -= 1
                if entry[0] == 0:
                    self.current -= entry[1]
                    del self._live[key]
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            yield self
        self.current = 0
        self._live.clear()


def measure(
    module: nn.Module, optimizer: torch.optim.Optimizer | None, activations_peak: int, received: int
) -> MemoryBreakdown:
    frozen, trainable, grads = module_bytes(module)
    # Gradients are allocated for every trainable parameter during backward, even if freed since.
    return MemoryBreakdown(
        weights=frozen,
        trainable=trainable,
        gradients=max(grads, trainable),
        optimizer=optimizer_bytes(optimizer) if optimizer is not None else 0,
        activations=activations_peak,
        received=received,
    )
