"""One aggregation step for a fleet whose clients may train LoRA adapters of different ranks.

`RankMix` is what a scheme calls instead of plain FedAvg. It owns the rank arithmetic so that every
scheme aggregates the same way:

* equal ranks: FedAvg of the full adapters, and every client continues from the average;
* `hetlora`: zero-padding with rank-aware weights to the largest rank, each client continuing
  from the leading slices of the aggregate that fit its rank;
* `flora`: the factors are stacked, so the stacked adapter applies exactly the weighted sum of the
  clients' updates; every party folds that update into the base weights it holds and continues
  from a fresh adapter at its own rank (same seeded initialisation everywhere), with the averaged
  trained heads. What travels is the stacked factors.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from fleettune.aggregation.fedavg import fedavg
from fleettune.aggregation.hetero import flora_stack, hetlora_aggregate, hetlora_truncate, lora_deltas

AdapterState = dict[str, torch.Tensor]

METHODS = ("hetlora", "flora")
_A = ".lora_A.weight"
_B = ".lora_B.weight"


@dataclass
class Aggregate:
    """The outcome of one aggregation.

    `evaluation` is the global adapter at the global rank, to be read on top of the (merged) base
    weights. With `flora`, `stacked` holds the stacked factors of rank `stacked_rank` that every
    party folds into its base weights (see `RankMix.deltas`) and `continue_from` the fresh adapter
    each client goes on training; otherwise `continue_from` is each client's share of `evaluation`."""

    evaluation: AdapterState
    continue_from: dict[str, AdapterState]
    stacked: AdapterState | None = None
    stacked_rank: int = 0


@dataclass(frozen=True)
class RankMix:
    """The ranks of a run's clients, their LoRA alpha, and how mixed ranks are combined."""

    ranks: Mapping[str, int]
    alpha: float
    method: str = "hetlora"
    seed: int = 0
    _order: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown way to combine mixed LoRA ranks {self.method!r}; expected one of {METHODS}")
        if not self.ranks or any(r < 1 for r in self.ranks.values()):
            raise ValueError(f"every client needs a LoRA rank >= 1, got {dict(self.ranks)}")
        object.__setattr__(self, "_order", {c: i for i, c in enumerate(self.ranks)})

    @property
    def uniform(self) -> bool:
        return len(set(self.ranks.values())) == 1

    @property
    def global_rank(self) -> int:
        """The rank of the global adapter that is evaluated (and, with hetlora, aggregated)."""
        return max(self.ranks.values())

    @property
    def merges(self) -> bool:
        """True when aggregation folds the clients' updates into the base weights (flora, mixed ranks)."""
        return self.method == "flora" and not self.uniform

    def start(self, global_state: AdapterState, client: str) -> AdapterState:
        """Client's initial adapter from the run's initial global adapter (at the global rank)."""
        return self._share(global_state, client)

    def combine(
        self, views: Sequence[AdapterState], clients: Sequence[str], weights: Sequence[float], version: int = 0
    ) -> Aggregate:
        """Aggregate the clients' full adapters; every client of the run gets what it continues from.
        `version` numbers the aggregation (it seeds flora's fresh adapters)."""
        ranks = [self.ranks[c] for c in clients]
        if self.uniform:
            average = fedavg(views, weights)
            return Aggregate(average, {c: average for c in self.ranks})
        if self.method == "hetlora":
            padded, _ = hetlora_aggregate(views, ranks, weights, self.alpha)
            return Aggregate(padded, {c: self._share(padded, c) for c in self.ranks})
        stacked, stacked_rank = flora_stack(views, ranks, weights, self.alpha)
        fresh = {c: self.fresh(stacked, self.ranks[c], c, version) for c in self.ranks}
        evaluation = self.fresh(stacked, self.global_rank, None, version)
        return Aggregate(evaluation, fresh, stacked, stacked_rank)

    def _share(self, global_state: AdapterState, client: str) -> AdapterState:
        rank = self.ranks[client]
        if rank == self.global_rank:
            return dict(global_state)
        return hetlora_truncate(global_state, rank, self.alpha, self.global_rank)

    def fresh(self, template: AdapterState, rank: int, client: str | None, version: int = 0) -> AdapterState:
        """The fresh rank-`rank` adapter `client` (None: the global evaluation adapter) continues from after
        aggregation `version` (see `fresh_adapter`)."""
        index = -1 if client is None else self._order[client]
        return fresh_adapter(template, rank, self.seed, version, index)

    def deltas(self, stacked_part: AdapterState, stacked_rank: int) -> dict[str, torch.Tensor]:
        """Dense base-weight updates of a (part of a) stacked adapter, keyed by module path."""
        return lora_deltas(stacked_part, self.alpha, stacked_rank)


def fresh_adapter(template: AdapterState, rank: int, seed: int, version: int, index: int) -> AdapterState:
    """A new rank-`rank` adapter shaped like `template`'s modules: A drawn as PEFT draws it (uniform with
    bound 1/sqrt(in_features)), B zero, so it changes nothing until trained; other keys (trained heads)
    copied. Each module's A is seeded by the run's seed, the aggregation `version`, the client's `index`
    (-1: the global adapter) and the module's key alone, so a device that holds only some modules draws
    exactly what the server draws for them."""
    out: AdapterState = {}
    for key, value in template.items():
        if key.endswith(_A):
            fan_in = value.shape[1]
            bound = 1.0 / math.sqrt(fan_in)
            generator = torch.Generator().manual_seed(_module_seed(seed, version, index, key))
            out[key] = torch.empty(rank, fan_in, dtype=value.dtype).uniform_(-bound, bound, generator=generator)
        elif key.endswith(_B):
            out[key] = torch.zeros(value.shape[0], rank, dtype=value.dtype)
        else:
            out[key] = value.detach().clone()
    return out


def _module_seed(seed: int, version: int, index: int, key: str) -> int:
    """A seed that is the same in every process (unlike `hash` of a string)."""
    digest = hashlib.blake2b(f"{seed}/{version}/{index}/{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def uniform_mix(clients: Sequence[str], rank: int, alpha: float) -> RankMix:
    return RankMix({c: rank for c in clients}, alpha)
