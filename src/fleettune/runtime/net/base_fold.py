"""What a device joining a run that folds stacked adapters (flora, mixed ranks) receives.

A device builds its stage from the pre-trained weights, but the server's base weights have taken every
stacked update folded so far. The join therefore carries, next to the device's adapter part, the sum of
those dense updates for the device's layers; the device folds it in before it trains. It is one tensor per
adapted module whatever the number of aggregations, so rejoining costs the same late in a run as early.
"""

from __future__ import annotations

import torch

from fleettune.errors import InputError
from fleettune.models.adapters import AdapterState

BASE = "base-update/"  # key prefix of the dense updates in a join's state


def with_base(part: AdapterState, base_update: dict[str, torch.Tensor]) -> AdapterState:
    """One state holding the adapter part and the base-weight updates (module path keys)."""
    return {**part, **{BASE + key: value for key, value in base_update.items()}}


def split_base(state: AdapterState) -> tuple[AdapterState, dict[str, torch.Tensor]]:
    """The adapter part and the base-weight updates of a join's state."""
    part = {k: v for k, v in state.items() if not k.startswith(BASE)}
    update = {k.removeprefix(BASE): v for k, v in state.items() if k.startswith(BASE)}
    if update and not part:
        raise InputError("join state holds base-weight updates but no adapter; expected both")
    return part, update


def accumulate(total: dict[str, torch.Tensor], update: dict[str, torch.Tensor]) -> None:
    """Add one aggregation's dense update to the running sum (in place)."""
    for key, value in update.items():
        total[key] = value.clone() if key not in total else total[key] + value
