"""The public parameters of one aggregation, known to the server and every client alike.

Threshold rule: 2 <= threshold <= n and threshold > n/2 (an honest majority). With a majority
threshold, the clients a server could tell "client u survived" (to collect u's self-mask shares) and
those it could tell "client u dropped" (to collect u's mask-key shares) are disjoint groups that cannot
both reach the threshold, so even a server that lies about dropouts cannot unmask a single input. The
protocol tolerates up to n - threshold dropouts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

from fleettune.privacy.secagg.fixedpoint import FixedPoint

MAX_ID_BYTES = 255
MAX_AGGREGATION_ID_BYTES = 255
AGGREGATION_TAG_BYTES = 8


def min_threshold(n_clients: int) -> int:
    """The smallest threshold accepted for `n_clients`: a strict majority, and at least 2."""
    return max(2, n_clients // 2 + 1)


def check_threshold(threshold: int, n_clients: int) -> None:
    """Raise ValueError unless `threshold` suits `n_clients` under the honest-majority rule."""
    if n_clients < 2:
        raise ValueError(f"secure aggregation needs at least 2 clients, got {n_clients}")
    if threshold > n_clients:
        raise ValueError(f"threshold {threshold} exceeds the number of clients {n_clients}")
    if threshold < min_threshold(n_clients):
        raise ValueError(
            f"threshold {threshold} is too low for {n_clients} clients: it must be a strict majority, "
            f"at least {min_threshold(n_clients)}"
        )


@dataclass(frozen=True)
class SecAggConfig:
    """One aggregation: who may take part, how many shares rebuild a secret, what is summed and how encoded.

    `clients` fixes each client's Shamir point (its position + 1) and the sign order of pairwise masks,
    so it must be the same list, in the same order, on every party. `aggregation_id` names the aggregation
    (e.g. the training round); keys and messages of one aggregation are useless in another.
    """

    clients: tuple[str, ...]
    threshold: int
    vector_length: int
    codec: FixedPoint
    aggregation_id: bytes = b""
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "clients", tuple(self.clients))
        if len(set(self.clients)) != len(self.clients):
            raise ValueError("client ids must be unique")
        for client in self.clients:
            if not client or len(client.encode()) > MAX_ID_BYTES:
                raise ValueError(f"client id {client!r} must be 1 to {MAX_ID_BYTES} bytes of UTF-8")
        check_threshold(self.threshold, len(self.clients))
        if self.vector_length < 1:
            raise ValueError(f"vector_length must be at least 1, got {self.vector_length}")
        if len(self.aggregation_id) > MAX_AGGREGATION_ID_BYTES:
            raise ValueError(
                f"aggregation_id must be at most {MAX_AGGREGATION_ID_BYTES} bytes, got {len(self.aggregation_id)}"
            )
        self.codec.check_capacity(len(self.clients))
        object.__setattr__(self, "_index", {c: i + 1 for i, c in enumerate(self.clients)})

    @property
    def n(self) -> int:
        return len(self.clients)

    def index(self, client: str) -> int:
        """The client's Shamir x-coordinate (1-based position in `clients`)."""
        return self._index[client]

    def knows(self, client: str) -> bool:
        return client in self._index

    def ordered(self, a: str, b: str) -> tuple[str, str]:
        """The pair in protocol order (lower index first), as key derivation expects it."""
        return (a, b) if self._index[a] < self._index[b] else (b, a)

    def mask_sign(self, owner: str, peer: str) -> int:
        """+1 if `owner` adds the pair mask it shares with `peer`, -1 if it subtracts it."""
        return 1 if self._index[owner] < self._index[peer] else -1

    @cached_property
    def aggregation_tag(self) -> bytes:
        """8 bytes identifying this exact aggregation; every message carries it, so mixed-up runs are refused."""
        h = hashlib.sha256(b"fleettune-secagg/v1/config")
        for client in self.clients:
            h.update(len(client.encode()).to_bytes(2, "big") + client.encode())
        codec = self.codec
        h.update(f"|{self.threshold}|{self.vector_length}|{codec.ring_bits}|{codec.frac_bits}|{codec.clip!r}|".encode())
        h.update(self.aggregation_id)
        return h.digest()[:AGGREGATION_TAG_BYTES]
