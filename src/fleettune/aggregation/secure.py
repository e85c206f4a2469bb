"""Secure aggregation inside runs: FedAvg's weighted sum of what the devices hold, computed through the protocol."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from fleettune.aggregation.fedavg import sample_weights
from fleettune.aggregation.sum_groups import SumGroup
from fleettune.privacy.dp import clip_update, gaussian_like
from fleettune.privacy.secagg import ROUNDS, FixedPoint, flatten_state, secure_sum, unflatten_state
from fleettune.privacy.secagg.messages import masked_input_bytes

if TYPE_CHECKING:
    from fleettune.aggregation.policy import AggregationPolicy, PolicySpec

AdapterState = dict[str, torch.Tensor]

RING_BITS = 32  # 4 bytes per value, like the fp32 upload the masked input replaces
MASKED_INPUT = "masked_input"


@dataclass(frozen=True)
class SecAggSpec:
    """A run's secure aggregation: its threshold and the range its fixed-point encoding holds."""

    threshold: int  # masked inputs (and unmasking answers) needed to open the sum
    value_range: float  # each weighted value is clipped to [-value_range, value_range] before encoding
    ring_bits: int = RING_BITS

    def codec(self, clients: int) -> FixedPoint:
        """The finest encoding whose sum over `clients` inputs cannot overflow."""
        return FixedPoint.for_clients(clients, self.value_range, self.ring_bits)


@dataclass(frozen=True)
class ProtocolTraffic:
    """One aggregation's protocol bytes per client and protocol round, the masked input's upload excepted: it
    travels in place of the device's adapter upload and is counted there (`masked_upload_bytes`)."""

    sent: dict[str, dict[str, int]] = field(default_factory=dict)
    received: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass
class SecAggTotals:
    """What secure aggregation did over a run, for the report."""

    threshold: int
    value_range: float
    aggregations: int = 0  # sums opened
    aborted: int = 0  # aggregations with fewer than `threshold` masked inputs
    clipped_values: int = 0  # weighted values outside the range, clipped by the encoding
    resolution: float | None = None  # the finest encoding's step, of the last aggregation
    uplink: dict[str, int] = field(default_factory=dict)  # per client, protocol bytes beyond the masked input
    downlink: dict[str, int] = field(default_factory=dict)


class SecureSummer:
    """Runs one protocol instance per aggregation and keeps the run's totals."""

    def __init__(self, spec: SecAggSpec, seed: int) -> None:
        self.spec = spec
        self.seed = seed
        self.totals = SecAggTotals(spec.threshold, spec.value_range)
        self._instances = 0

    def sum(
        self, parts: Mapping[str, AdapterState], groups: Sequence[SumGroup], round_index: int
    ) -> tuple[AdapterState | None, ProtocolTraffic]:
        """The sum of `parts` (client -> its weighted values) over the clients whose masked inputs arrived, one
        protocol instance per group of keys (`sum_groups`); None when fewer than the run's threshold of clients,
        or than a group's threshold of its members, sent theirs."""
        roster = list(dict.fromkeys(c for g in groups for c in g.clients))
        assert set(parts) <= set(roster), "every client that sends is on the roster"
        finishers = [c for c in roster if c in parts]
        if len(finishers) < self.spec.threshold or any(
            sum(c in parts for c in g.clients) < g.threshold for g in groups
        ):
            self.totals.aborted += 1
            return None, ProtocolTraffic()
        total: AdapterState = {}
        sent = {c: dict.fromkeys(ROUNDS, 0) for c in roster}
        received = {c: dict.fromkeys(ROUNDS, 0) for c in roster}
        clipped, resolution = 0, 0.0
        for group in groups:
            vectors = {
                c: flatten_state({**group.template, **_only(parts.get(c, {}), group.template)})[0]
                for c in group.clients
            }
            codec = self.spec.codec(len(group.clients))
            seed = int(np.random.default_rng([self.seed, self._instances]).integers(2**62))
            self._instances += 1
            result = secure_sum(
                vectors,
                group.threshold,
                drop_after_sharing=[c for c in group.clients if c not in parts],
                codec=codec,
                aggregation_id=aggregation_id(round_index, group.index),
                rng=seed,
            )
            for c in group.clients:
                for name in ROUNDS:
                    sent[c][name] += 0 if name == MASKED_INPUT else result.client_sent[c][name]
                    received[c][name] += result.client_received[c][name]
            clipped += sum(result.clipped.values())
            resolution = max(resolution, codec.resolution)
            total.update(unflatten_state(result.values, flatten_state(group.template)[1]))
        self.note(sent, received, clipped, resolution)
        return total, ProtocolTraffic(sent, received)

    def note(
        self,
        sent: Mapping[str, Mapping[str, int]],
        received: Mapping[str, Mapping[str, int]],
        clipped: int,
        resolution: float,
    ) -> None:
        """One opened sum: its protocol bytes per client (the masked inputs excepted), clipped values and the
        coarsest resolution of its groups' encodings."""
        totals = self.totals
        totals.aggregations += 1
        totals.clipped_values += clipped
        totals.resolution = resolution
        for client in sent:
            totals.uplink[client] = totals.uplink.get(client, 0) + sum(sent[client].values())
            totals.downlink[client] = totals.downlink.get(client, 0) + sum(received[client].values())


def aggregation_id(round_index: int, group: int) -> bytes:
    """What names one protocol instance (a round's group of keys): its keys and messages are void in any other."""
    return f"round-{round_index + 1}/group-{group}".encode()


def masked_upload_bytes(spec: SecAggSpec, client: str, groups: Sequence[SumGroup]) -> int:
    """What `client` uploads in place of its adapter: its masked vector in every group it belongs to."""
    return sum(masked_input_bytes(client, g.size, spec.ring_bits) for g in groups if client in g.clients)


def _only(state: Mapping[str, torch.Tensor], keys: Mapping[str, torch.Tensor]) -> AdapterState:
    return {key: value for key, value in state.items() if key in keys}


@dataclass(frozen=True)
class Weighting:
    """How an aggregation's clients weight what they put into the sum, and what the server divides it by.

    Plain FedAvg: each client adds its adapter times n_i / sum(n), and the sum is the mean. With update
    clipping (DP) or update attacks: each adds its update from the previous global adapter; with DP the
    scales are w_i / max(w) and the denominator their sum, as `noisy_aggregate` has them."""

    scales: tuple[float, ...]
    denominator: float
    updates: bool  # clients add their updates, not their adapters


def weighting(spec: PolicySpec, counts: Sequence[int]) -> Weighting:
    weights = sample_weights(counts)
    if spec.plain:
        return Weighting(tuple(weights), 1.0, updates=False)
    if spec.dp is None:
        return Weighting(tuple(weights), 1.0, updates=True)
    scales = tuple(w / max(weights) for w in weights)
    return Weighting(scales, sum(scales), updates=True)


def contribution(values: Mapping[str, torch.Tensor], scale: float, clip: float | None = None) -> AdapterState:
    """What one client adds to the secure sum: `values` (its adapter, or its update) clipped to L2 norm `clip`
    when given, times its scale. Devices in a deployment call this on what they hold, the simulation on every
    client: the same numbers either way."""
    state = {key: value.detach().to(torch.float64) for key, value in values.items()}
    if clip is not None:
        state = clip_update(state, clip)[0]
    return _scaled(state, scale)


def secure_combine(
    policy: AggregationPolicy,
    previous: AdapterState,
    views: Sequence[AdapterState],
    clients: Sequence[str],
    counts: Sequence[int],
    held: Sequence[frozenset[str]],
    groups: Sequence[SumGroup],
    round_index: int,
) -> tuple[AdapterState | None, ProtocolTraffic]:
    """The policy's aggregation with every device-held key summed securely (`held[i]`: the keys client i holds;
    the rest of its view is the server's own). None when the protocol aborted: nothing changes then.

    Each device scales its values by its public FedAvg weight (sample counts are known to the server, as in plain
    FedAvg); the weighted values of the keys it holds travel masked (one protocol instance per group of keys, see
    `sum_groups`), and the server learns only their sums. Keys the server holds itself for a device (the
    server-side part of a split model) are added in the clear. With DP, each device clips its own update before
    weighting and the server adds the noise to the revealed sum, in `noisy_aggregate`'s order: the numbers equal
    the policy's own up to the encoding.

    The groups' roster is the clients online when the round began; those whose upload never arrived drop out after
    sharing their keys, and the sum opens only if at least `threshold` masked inputs arrive. The simulation
    draws the protocol's secrets from the run's seed: repeatable, not secret."""
    summer = policy.secure
    assert summer is not None, "the run has no secure aggregation"
    weights = weighting(policy.spec, counts)
    clip = policy.spec.dp.clip if policy.spec.dp is not None else None
    if weights.updates:
        inputs = [policy.client_update(previous, view, client) for view, client in zip(views, clients, strict=True)]
    else:
        inputs = list(views)
    contributions = [contribution(x, s, clip) for x, s in zip(inputs, weights.scales, strict=True)]
    private = {
        client: {key: value for key, value in part.items() if key in keys}
        for client, part, keys in zip(clients, contributions, held, strict=True)
    }
    secret, traffic = summer.sum(private, groups, round_index)
    if secret is None:
        return None, traffic
    in_clear = [
        {key: v for key, v in part.items() if key not in keys} for part, keys in zip(contributions, held, strict=True)
    ]
    total = add_in_clear(secret, in_clear, previous)
    return open_sum(policy, previous, total, weights, clients, round_index), traffic


def add_in_clear(
    secret: Mapping[str, torch.Tensor], parts: Iterable[Mapping[str, torch.Tensor]], previous: AdapterState
) -> AdapterState:
    """The whole sum: the securely summed keys plus the server's own parts, key by key in `previous`'s order."""
    total: AdapterState = {}
    parts = list(parts)
    for key, reference in previous.items():
        acc = secret[key].clone() if key in secret else torch.zeros(reference.shape, dtype=torch.float64)
        for part in parts:
            if key in part:
                acc += part[key]
        total[key] = acc
    return total


def open_sum(
    policy: AggregationPolicy,
    previous: AdapterState,
    total: Mapping[str, torch.Tensor],
    weights: Weighting,
    clients: Sequence[str],
    round_index: int,
) -> AdapterState:
    """The new global adapter from the whole weighted sum: the mean itself (plain FedAvg), or the summed updates
    (with DP noise) over the denominator applied to the previous adapter (`AggregationPolicy.apply`), the
    accountant stepping."""
    if not weights.updates:
        return {key: total[key].to(value.dtype) for key, value in previous.items()}
    dp = policy.spec.dp
    sigma = 0.0 if dp is None or dp.noise_multiplier is None else dp.noise_multiplier
    step: AdapterState = {}
    for key in previous:  # the key order `noisy_aggregate` draws its noise in
        summed = total[key]
        if dp is not None and sigma > 0:
            summed = summed + sigma * dp.clip * gaussian_like(summed, policy.generator)
        step[key] = summed / weights.denominator
    policy.close(round_index, clients)
    return policy.apply(previous, step)


def _scaled(state: Mapping[str, torch.Tensor], factor: float) -> AdapterState:
    return {key: value.detach().to(torch.float64) * factor for key, value in state.items()}
