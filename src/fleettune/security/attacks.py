"""Simulated attacks: the choice of malicious clients, label flipping of their data, poisoning of their updates.

Malicious clients are ceil(fraction x clients) of them (so any positive fraction means at least one), drawn
without replacement from the run's own random stream: the same seed always picks the same clients.
`label_flip` and `backdoor` are data attacks (a malicious client trains on labels l -> num_labels - 1 - l, or on
texts of which a fraction carry a trigger phrase and the target label); `scale` and `sign_flip` act on the update
a malicious client sends (multiplied by `scale`, or negated).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fleettune.data import Split
from fleettune.security.backdoor import DEFAULT_TRIGGER, poison

AdapterState = dict[str, torch.Tensor]

ATTACKS = ("none", "label_flip", "backdoor", "scale", "sign_flip")
DATA_ATTACKS = ("label_flip", "backdoor")
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
class DataAttack:
    """What malicious clients do to their training data, once, before the run starts."""

    kind: str  # "label_flip" or "backdoor"
    malicious: frozenset[str]
    num_labels: int
    trigger: str = DEFAULT_TRIGGER
    fraction: float = 0.5  # of a malicious client's texts that get the trigger
    target: int = 0  # the label triggered texts are given
    stream: tuple[int, ...] = (0,)  # the run's random stream that, with the client, picks the triggered texts

    def __post_init__(self) -> None:
        if self.kind not in DATA_ATTACKS:
            raise ValueError(f"unknown data attack {self.kind!r}; expected one of {DATA_ATTACKS}")
        if self.kind == "backdoor" and not 0 <= self.target < self.num_labels:
            raise ValueError(f"target label {self.target} is not one of the {self.num_labels} labels")

    def apply(self, client: str, split: Split) -> Split:
        """The data `client` trains on: unchanged for honest clients."""
        if client not in self.malicious:
            return split
        if self.kind == "label_flip":
            return flip_labels(split, self.num_labels)
        # Each malicious client draws from its own stream: its poisoned rows do not depend on the others'.
        rng = np.random.default_rng([*self.stream, sorted(self.malicious).index(client)])
        return poison(split, self.trigger, self.fraction, self.target, rng)


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
