"""A deployed secure aggregation's public parameters, as the server sends them to each device, and what a
device makes of them: the protocol's configuration and the vector it masks."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from fleettune.aggregation.secure import aggregation_id
from fleettune.errors import InputError
from fleettune.privacy.secagg import FixedPoint, SecAggConfig, flatten_state

Layout = tuple[tuple[str, tuple[int, ...]], ...]


@dataclass(frozen=True)
class SecureRound:
    """One aggregation as one device takes part in it. Everything but `scale` and `clip` is the same for every
    device; the configuration's tag (a hash of it) makes devices and server refuse each other's messages if
    they disagree."""

    clients: tuple[str, ...]  # the roster, in the order that fixes Shamir points and mask signs
    threshold: int
    frac_bits: int  # the fixed-point encoding
    value_range: float
    ring_bits: int
    round: int  # the round's index and the group's: they name the protocol instance
    group: int
    layout: Layout  # every key any roster device holds, with its shape: the vector each device masks
    scale: float  # this device's weight (see `aggregation.secure.weighting`)
    clip: float | None  # DP: the bound this device clips its update to
    updates: bool  # this device adds its update from the global adapter it was sent, not its adapter

    def config(self) -> SecAggConfig:
        size = sum(int(np.prod(shape, dtype=np.int64)) for _, shape in self.layout)
        codec = FixedPoint(self.frac_bits, self.value_range, self.ring_bits)
        return SecAggConfig(self.clients, self.threshold, size, codec, aggregation_id(self.round, self.group))

    def vector(self, values: Mapping[str, torch.Tensor]) -> NDArray[np.float64]:
        """The flat vector of `values` over the group's layout (zeros for its keys this device does not hold)."""
        template = {key: torch.zeros(shape, dtype=torch.float64) for key, shape in self.layout}
        mine = {key: value for key, value in values.items() if key in template}
        for key, value in mine.items():
            if value.shape != template[key].shape:
                raise InputError(
                    f"adapter key {key} is {tuple(value.shape)}; the aggregation expects {tuple(template[key].shape)}"
                )
        if not mine:
            raise InputError(f"this device holds none of the keys of aggregation group {self.group}")
        return flatten_state({**template, **mine})[0]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SecureRound:
        try:
            raw = json.loads(text)
            raw["clients"] = tuple(raw["clients"])
            raw["layout"] = tuple((str(key), tuple(int(n) for n in shape)) for key, shape in raw["layout"])
            return cls(**raw)
        except (ValueError, TypeError, KeyError) as exc:
            raise InputError(f"malformed secure-aggregation setup from the server: {exc}") from None


def layout_of(template: Mapping[str, torch.Tensor]) -> Layout:
    return tuple((key, tuple(value.shape)) for key, value in sorted(template.items()))
