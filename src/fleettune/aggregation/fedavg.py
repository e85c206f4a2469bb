"""Weighted federated averaging of adapter states (pure: inputs are never modified)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

AdapterState = dict[str, torch.Tensor]


def sample_weights(num_samples: Sequence[int]) -> list[float]:
    """FedAvg weights n_i / sum(n): each client counts in proportion to its data."""
    if not num_samples or any(n < 0 for n in num_samples) or sum(num_samples) == 0:
        raise ValueError(f"sample counts must be non-negative with a positive sum, got {list(num_samples)}")
    total = float(sum(num_samples))
    return [n / total for n in num_samples]


def fedavg(states: Sequence[AdapterState], weights: Sequence[float]) -> AdapterState:
    """sum_i w_i * state_i per key; every state must hold the same keys and shapes."""
    if len(states) != len(weights) or not states:
        raise ValueError(f"need one weight per state, got {len(states)} states and {len(weights)} weights")
    keys = set(states[0])
    for i, state in enumerate(states[1:], start=1):
        if set(state) != keys:
            raise ValueError(f"state {i} holds different keys from state 0: {sorted(keys ^ set(state))[:3]}")
    out: AdapterState = {}
    for key in states[0]:
        # Accumulate in float64 so the average does not depend on client order beyond rounding.
        acc = torch.zeros_like(states[0][key], dtype=torch.float64)
        for state, weight in zip(states, weights, strict=True):
            acc += weight * state[key].to(torch.float64)
        out[key] = acc.to(states[0][key].dtype)
    return out
