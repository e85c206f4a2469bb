"""Simulated attacks: the choice of malicious clients, label flipping of their data, poisoning of their updates.

Malicious clients are ceil(fraction x clients) of them (so any positive fraction means at least one), drawn
without replacement from the run's own random stream: the same seed always picks the same clients.
`label_flip` is a data attack (a malicious client trains on labels l -> num_labels - 1 - l); `scale` and
`sign_flip` act on the update a malicious client sends (multiplied by `scale`, or negated).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fleettune.data import Split

AdapterState = dict[str, torch.Tensor]

ATTACKS = ("none", "label_flip", "scale", "sign_flip")
UPDATE_ATTACKS = ("scale", "sign_flip")


def choose_malicious(clients: Sequence[str], fraction: float, rng: np.random.Generator) -> tuple[str, ...]:
    """ceil(fraction x len(clients)) client ids drawn without replacement, in the clients' order."""
    count = math.ceil(fraction * len(clients) - 1e-9)  # 0.5 x 6 is 3 even when the product lands above 3
    if count <= 0:
        return ()
    picked = set(int(i) for i in rng.choice(len(clients), size=min(count, len(clients)), replace=False))
    return tuple(c for i, c in enumerate(clients) if i in picked)


def flip_labels(split: Split, num_labels: int) -> Split:
    """The split with every label l replaced by num_labels - 1 - l (texts and groups unchanged)."""
    return Split(list(split.texts), [num_labels - 1 - label for label in split.labels], split.groups)


@dataclass(frozen=True)
class UpdateAttack:
    """What malicious clients do to their update (their trained adapter minus the global one)."""

    kind: str  # "scale" or "sign_flip"
    malicious: frozenset[str]
    scale: float = 10.0

    def __post_init__(self) -> None:
        if self.kind not in UPDATE_ATTACKS:
            raise ValueError(f"unknown update attack {self.kind!r}; expected one of {UPDATE_ATTACKS}")

    def apply(self, client: str, update: Mapping[str, torch.Tensor]) -> AdapterState:
        """The update as `client` sends it: unchanged for honest clients."""
        if client not in self.malicious:
            return dict(update)
        factor = self.scale if self.kind == "scale" else -1.0
        return {key: tensor * factor for key, tensor in update.items()}
