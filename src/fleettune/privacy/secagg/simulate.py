"""Running a whole aggregation in one process, through real serialized messages, with byte and time accounting.

`secure_sum` plays the server and every client in turn. Every message goes through `to_bytes()` and
`from_bytes()`, so the byte counts are those a deployment would send, and every call is timed with
`time.perf_counter` on the party that makes it (serializing what it sends and parsing what it gets
included). Dropouts are simulated at three points: a client that drops stops answering from then on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import numpy as np
from numpy.typing import NDArray

from fleettune.privacy.secagg.client import SecAggClient
from fleettune.privacy.secagg.config import SecAggConfig, check_threshold
from fleettune.privacy.secagg.fixedpoint import FixedPoint
from fleettune.privacy.secagg.messages import (
    AdvertiseKeys,
    ClientMessage,
    MaskedInput,
    Roster,
    ShareBundle,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from fleettune.privacy.secagg.randomness import RandomSource, resolve
from fleettune.privacy.secagg.ring import RingVector
from fleettune.privacy.secagg.server import SecAggServer
from fleettune.privacy.secagg.vectors import as_vector

ROUNDS = ("advertise", "share_keys", "masked_input", "unmask")
DEFAULT_CLIP = 1.0
T = TypeVar("T")
P = ParamSpec("P")


def _per_round() -> dict[str, int]:
    return dict.fromkeys(ROUNDS, 0)


def _per_round_seconds() -> dict[str, float]:
    return dict.fromkeys(ROUNDS, 0.0)


@dataclass(eq=False)
class SecureSumResult:
    """The decoded sum and what it cost.

    Byte counts are keyed by party and round name (`ROUNDS`); a round's server reply (roster, share
    bundles, unmask request) is booked under the round it closes. Only deliveries to clients still
    online are counted, so the server's totals equal the clients' totals.
    """

    values: NDArray[np.float64]  # decoded sum of the included clients' inputs
    ring_sum: RingVector  # the same sum in the ring: exactly the sum of their fixed-point encodings
    included: tuple[str, ...]  # clients whose inputs are in the sum
    dropped: tuple[str, ...]  # clients whose inputs are not: they dropped before their masked input arrived
    codec: FixedPoint
    client_sent: dict[str, dict[str, int]] = field(default_factory=dict)
    client_received: dict[str, dict[str, int]] = field(default_factory=dict)
    server_sent: dict[str, int] = field(default_factory=_per_round)
    server_received: dict[str, int] = field(default_factory=_per_round)
    client_seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    server_seconds: dict[str, float] = field(default_factory=_per_round_seconds)
    clipped: dict[str, int] = field(default_factory=dict)  # entries clipped by the codec, per client

    def upload_bytes(self, client: str) -> int:
        """Everything `client` sent over the whole protocol."""
        return sum(self.client_sent[client].values())

    def download_bytes(self, client: str) -> int:
        return sum(self.client_received[client].values())


def check_dropouts(
    clients: Collection[str],
    threshold: int,
    drop_after_advertise: Collection[str],
    drop_after_sharing: Collection[str],
    drop_after_masking: Collection[str],
) -> None:
    """Raise ValueError unless the dropout sets are disjoint, name known clients and leave threshold finishers."""
    groups = {
        "drop_after_advertise": set(drop_after_advertise),
        "drop_after_sharing": set(drop_after_sharing),
        "drop_after_masking": set(drop_after_masking),
    }
    for name, group in groups.items():
        unknown = group - set(clients)
        if unknown:
            raise ValueError(f"{name} names unknown clients {sorted(unknown)}")
    everyone: set[str] = set()
    for name, group in groups.items():
        if group & everyone:
            raise ValueError(f"{name} repeats clients {sorted(group & everyone)} already dropped earlier")
        everyone |= group
    left = len(clients) - len(everyone)
    if left < threshold:
        raise ValueError(
            f"{len(everyone)} of {len(clients)} clients drop, leaving {left} to finish; threshold {threshold} "
            f"tolerates at most {len(clients) - threshold} dropouts"
        )


def secure_sum(
    vectors: Mapping[str, Any],
    threshold: int,
    *,
    drop_after_advertise: Collection[str] = (),
    drop_after_sharing: Collection[str] = (),
    drop_after_masking: Collection[str] = (),
    codec: FixedPoint | None = None,
    clip: float = DEFAULT_CLIP,
    aggregation_id: bytes = b"",
    rng: RandomSource | int | None = None,
) -> SecureSumResult:
    """Securely sum `vectors` (client id -> 1-D float vector) with a `threshold`-out-of-n protocol.

    Dropouts: `drop_after_advertise` clients vanish after round 0 and `drop_after_sharing` after round 1;
    their masked inputs never arrive, so their inputs are not in the sum and the server rebuilds their
    mask keys to cancel their pairwise masks. `drop_after_masking` clients vanish after sending their
    masked input: their inputs are in the sum, their self masks are removed with the others' shares.

    `codec` defaults to the finest 32-bit encoding that holds n vectors clipped to [-clip, clip]. `rng`
    is None (operating-system randomness), an int seed (repeatable, not secure) or a `RandomSource`.
    """
    clients = tuple(vectors)
    check_threshold(threshold, len(clients))
    check_dropouts(clients, threshold, drop_after_advertise, drop_after_sharing, drop_after_masking)
    inputs = {c: as_vector(vectors[c]) for c in clients}
    lengths = {v.size for v in inputs.values()}
    if len(lengths) != 1:
        raise ValueError(f"all vectors must have one length, got lengths {sorted(lengths)}")
    codec = codec or FixedPoint.for_clients(len(clients), clip)
    config = SecAggConfig(clients, threshold, lengths.pop(), codec, aggregation_id)
    source = resolve(rng)

    result = SecureSumResult(np.zeros(0), codec.ring.zeros(0), (), (), codec)
    for c in clients:
        result.client_sent[c] = _per_round()
        result.client_received[c] = _per_round()
        result.client_seconds[c] = _per_round_seconds()

    def on_client(client: str, round_name: str, step: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        start = time.perf_counter()
        out = step(*args, **kwargs)
        result.client_seconds[client][round_name] += time.perf_counter() - start
        return out

    def on_server(round_name: str, step: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        start = time.perf_counter()
        out = step(*args, **kwargs)
        result.server_seconds[round_name] += time.perf_counter() - start
        return out

    def upload(client: str, round_name: str, data: bytes, parse: Callable[[bytes], ClientMessage]) -> None:
        result.client_sent[client][round_name] += len(data)
        result.server_received[round_name] += len(data)
        on_server(round_name, _server_take, server, parse, data)

    def deliver(client: str, round_name: str, data: bytes) -> None:
        result.client_received[client][round_name] += len(data)
        result.server_sent[round_name] += len(data)

    server = SecAggServer(config)
    parties = {c: on_client(c, "advertise", SecAggClient, c, config, source) for c in clients}

    # Round 0: advertise keys.
    for c in clients:
        upload(c, "advertise", on_client(c, "advertise", _advertise, parties[c]), AdvertiseKeys.from_bytes)
    roster = on_server("advertise", _end_advertise, server)
    online = [c for c in clients if c not in set(drop_after_advertise)]
    for c in online:
        deliver(c, "advertise", roster)

    # Round 1: share keys.
    for c in online:
        upload(c, "share_keys", on_client(c, "share_keys", _share_keys, parties[c], roster), ShareKeys.from_bytes)
    bundles = on_server("share_keys", _end_share_keys, server)
    online = [c for c in online if c not in set(drop_after_sharing)]
    for c in online:
        deliver(c, "share_keys", bundles[c])

    # Round 2: masked input collection.
    for c in online:
        data = on_client(c, "masked_input", _mask_input, parties[c], bundles[c], inputs[c])
        upload(c, "masked_input", data, MaskedInput.from_bytes)
        result.clipped[c] = parties[c].clipped
    request = on_server("masked_input", _end_masked_input, server)
    online = [c for c in online if c not in set(drop_after_masking)]
    for c in online:
        deliver(c, "masked_input", request)

    # Round 3: unmasking.
    for c in online:
        upload(c, "unmask", on_client(c, "unmask", _unmask, parties[c], request), UnmaskResponse.from_bytes)
    aggregate = on_server("unmask", server.end_unmasking)

    result.values, result.ring_sum = aggregate.values, aggregate.ring_sum
    result.included = aggregate.included
    result.dropped = tuple(c for c in clients if c not in aggregate.included)
    return result


# One function per protocol step on the wire: parse what arrives, act, serialize what leaves.
def _server_take(server: SecAggServer, parse: Callable[[bytes], ClientMessage], data: bytes) -> None:
    server.receive(parse(data))


def _advertise(client: SecAggClient) -> bytes:
    return client.advertise().to_bytes()


def _end_advertise(server: SecAggServer) -> bytes:
    return server.end_advertise().to_bytes()


def _share_keys(client: SecAggClient, roster: bytes) -> bytes:
    return client.share_keys(Roster.from_bytes(roster)).to_bytes()


def _end_share_keys(server: SecAggServer) -> dict[str, bytes]:
    return {c: bundle.to_bytes() for c, bundle in server.end_share_keys().items()}


def _mask_input(client: SecAggClient, bundle: bytes, vector: NDArray[np.float64]) -> bytes:
    return client.mask_input(ShareBundle.from_bytes(bundle), vector).to_bytes()


def _end_masked_input(server: SecAggServer) -> bytes:
    return server.end_masked_input().to_bytes()


def _unmask(client: SecAggClient, request: bytes) -> bytes:
    return client.unmask(UnmaskRequest.from_bytes(request)).to_bytes()
