"""Turning what clients aggregate into the flat float vector the protocol sums, and back.

An adapter state (`dict[str, torch.Tensor]`) is flattened in sorted-name order, so every client that
holds the same tensor names and shapes produces vectors whose entries line up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    import torch


def as_vector(values: Any) -> NDArray[np.float64]:
    """A 1-D float64 numpy copy of a numpy array, a torch tensor (any device) or a sequence of numbers."""
    if hasattr(values, "detach"):  # a torch tensor, without importing torch here
        values = values.detach().cpu().double().numpy()
    vector = np.array(values, dtype=np.float64)
    if vector.ndim != 1:
        raise ValueError(f"the aggregated input must be a 1-D vector, got shape {vector.shape}")
    return vector


@dataclass(frozen=True)
class StateLayout:
    """Names, shapes and dtypes of a flattened state, in vector order: what `unflatten_state` needs."""

    entries: tuple[tuple[str, tuple[int, ...], torch.dtype], ...]

    @property
    def size(self) -> int:
        return sum(int(np.prod(shape, dtype=np.int64)) for _, shape, _ in self.entries)


def flatten_state(state: Mapping[str, torch.Tensor]) -> tuple[NDArray[np.float64], StateLayout]:
    """One float64 vector holding every tensor of `state` (sorted by name), and the layout to undo it."""
    if not state:
        raise ValueError("cannot flatten an empty state")
    names = sorted(state)
    parts = [state[name].detach().cpu().double().reshape(-1).numpy() for name in names]
    layout = StateLayout(tuple((name, tuple(state[name].shape), state[name].dtype) for name in names))
    return np.concatenate(parts), layout


def unflatten_state(vector: Any, layout: StateLayout) -> dict[str, torch.Tensor]:
    """The state `flatten_state` flattened (or a sum of such states), with original shapes and dtypes."""
    import torch

    flat = as_vector(vector)
    if flat.size != layout.size:
        raise ValueError(f"a vector of {flat.size} values does not fit a layout of {layout.size} values")
    state: dict[str, torch.Tensor] = {}
    offset = 0
    for name, shape, dtype in layout.entries:
        count = int(np.prod(shape, dtype=np.int64))
        state[name] = torch.from_numpy(flat[offset : offset + count].copy()).reshape(shape).to(dtype)
        offset += count
    return state
