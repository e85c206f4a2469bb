"""Step-by-step protocol runs for the secure-aggregation tests: each round is a method, so a test can
inspect or tamper with the messages between rounds."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from fleettune.privacy.secagg import (
    Aggregate,
    FixedPoint,
    MaskedInput,
    Roster,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    SeededRandom,
    ShareBundle,
    UnmaskRequest,
    UnmaskResponse,
)


def make_config(
    n: int, threshold: int, length: int, clip: float = 1.0, aggregation_id: bytes = b"test"
) -> SecAggConfig:
    clients = tuple(f"dev{i}" for i in range(n))
    return SecAggConfig(clients, threshold, length, FixedPoint.for_clients(n, clip), aggregation_id)


def random_inputs(config: SecAggConfig, seed: int = 0, scale: float = 1.0) -> dict[str, NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    return {c: rng.uniform(-scale, scale, config.vector_length) for c in config.clients}


@dataclass
class Run:
    """One aggregation driven round by round with message objects (and a byte round trip for each)."""

    config: SecAggConfig
    seed: int | None = 0  # None: operating-system randomness
    server: SecAggServer = field(init=False)
    clients: dict[str, SecAggClient] = field(init=False)
    roster: Roster | None = None
    bundles: dict[str, ShareBundle] = field(default_factory=dict)
    masked: dict[str, MaskedInput] = field(default_factory=dict)
    request: UnmaskRequest | None = None
    responses: dict[str, UnmaskResponse] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rng = SeededRandom(self.seed) if self.seed is not None else None
        self.server = SecAggServer(self.config)
        self.clients = {c: SecAggClient(c, self.config, rng) for c in self.config.clients}

    def advertise(self, skip: Collection[str] = ()) -> Roster:
        for c, client in self.clients.items():
            if c not in skip:
                self.server.receive(client.advertise())
        self.roster = Roster.from_bytes(self.server.end_advertise().to_bytes())
        return self.roster

    def share(self, skip: Collection[str] = ()) -> dict[str, ShareBundle]:
        assert self.roster is not None
        for e in self.roster.entries:
            if e.client not in skip:
                self.server.receive(self.clients[e.client].share_keys(self.roster))
        self.bundles = {c: ShareBundle.from_bytes(b.to_bytes()) for c, b in self.server.end_share_keys().items()}
        return self.bundles

    def mask(self, inputs: Mapping[str, NDArray[np.float64]], skip: Collection[str] = ()) -> UnmaskRequest:
        for c, bundle in self.bundles.items():
            if c not in skip:
                message = MaskedInput.from_bytes(self.clients[c].mask_input(bundle, inputs[c]).to_bytes())
                self.masked[c] = message
                self.server.receive(message)
        self.request = UnmaskRequest.from_bytes(self.server.end_masked_input().to_bytes())
        return self.request

    def unmask(self, skip: Collection[str] = ()) -> Aggregate:
        assert self.request is not None
        for c in self.request.survivors:
            if c not in skip:
                self.responses[c] = self.clients[c].unmask(self.request)
                self.server.receive(self.responses[c])
        return self.server.end_unmasking()

    def all(self, inputs: Mapping[str, NDArray[np.float64]]) -> Aggregate:
        self.advertise()
        self.share()
        self.mask(inputs)
        return self.unmask()


def encoded_sum(config: SecAggConfig, inputs: Mapping[str, NDArray[np.float64]], who: Collection[str]) -> np.ndarray:
    """The plain ring sum of the fixed-point encodings of `who`'s inputs: what unmasking must return."""
    ring = config.codec.ring
    total = ring.zeros(config.vector_length)
    for c in who:
        total = ring.add(total, config.codec.encode(inputs[c]))
    return total
