"""Secure aggregation inside runs: FedAvg's weighted sum of what the devices hold, computed through the protocol."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from fleettune.aggregation.fedavg import sample_weights
from fleettune.privacy.dp import clip_update, gaussian_like
from fleettune.privacy.secagg import FixedPoint, flatten_state, secure_sum, unflatten_state

if TYPE_CHECKING:
    from fleettune.aggregation.policy import AggregationPolicy

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
    travels in place of the device's adapter upload and is counted there."""

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
        self, parts: Mapping[str, AdapterState], roster: Sequence[str], round_index: int
    ) -> tuple[AdapterState | None, ProtocolTraffic]:
        """The sum of `parts` (client -> its weighted values, by key; keys a client lacks count as zeros) over
        the roster's clients whose masked inputs arrived, or None when fewer than the threshold did."""
        assert set(parts) <= set(roster), "every client that sends is on the roster"
        finishers = [c for c in roster if c in parts]
        if len(finishers) < self.spec.threshold:
            self.totals.aborted += 1
            return None, ProtocolTraffic()
        template: AdapterState = {}
        for client in finishers:
            for key, value in parts[client].items():
                template.setdefault(key, torch.zeros(value.shape, dtype=torch.float64))
        vectors = {c: flatten_state({**template, **parts.get(c, {})})[0] for c in roster}
        _, layout = flatten_state(template)
        codec = self.spec.codec(len(roster))
        seed = int(np.random.default_rng([self.seed, self._instances]).integers(2**62))
        self._instances += 1
        result = secure_sum(
            vectors,
            self.spec.threshold,
            drop_after_sharing=[c for c in roster if c not in parts],
            codec=codec,
            aggregation_id=f"round-{round_index + 1}".encode(),
            rng=seed,
        )
        sent = {c: {**result.client_sent[c], MASKED_INPUT: 0} for c in roster}
        received = {c: dict(result.client_received[c]) for c in roster}
        totals = self.totals
        totals.aggregations += 1
        totals.clipped_values += sum(result.clipped.values())
        totals.resolution = codec.resolution
        for client in roster:
            totals.uplink[client] = totals.uplink.get(client, 0) + sum(sent[client].values())
            totals.downlink[client] = totals.downlink.get(client, 0) + sum(received[client].values())
        return unflatten_state(result.values, layout), ProtocolTraffic(sent, received)


def secure_combine(
    policy: AggregationPolicy,
    previous: AdapterState,
    views: Sequence[AdapterState],
    clients: Sequence[str],
    counts: Sequence[int],
    held: Sequence[frozenset[str]],
    roster: Sequence[str],
    round_index: int,
) -> tuple[AdapterState | None, ProtocolTraffic]:
    """The policy's aggregation with every device-held key summed securely (`held[i]`: the keys client i holds;
    the rest of its view is the server's own). None when the protocol aborted: nothing changes then.

    Each device scales its values by its public FedAvg weight (sample counts are known to the server, as in plain
    FedAvg); the weighted values of the keys it holds travel masked, and the server learns only their sum. Keys
    the server holds itself for a device (the server-side part of a split model) are added in the clear. With DP,
    each device clips its own update before weighting and the server adds the noise to the revealed sum, in
    `noisy_aggregate`'s order: the numbers equal the policy's own up to the encoding.

    The roster is the clients online when the round began; those whose upload never arrived drop out after
    sharing their keys, and the sum opens only if at least `threshold` masked inputs arrive. The simulation
    draws the protocol's secrets from the run's seed: repeatable, not secret."""
    summer = policy.secure
    assert summer is not None, "the run has no secure aggregation"
    weights = sample_weights(counts)
    spec = policy.spec
    if policy.plain:
        contributions = [_scaled(view, w) for view, w in zip(views, weights, strict=True)]
        total, traffic = _split_sum(summer, contributions, clients, held, roster, round_index)
        if total is None:
            return None, traffic
        return {key: total[key].to(value.dtype) for key, value in views[0].items()}, traffic
    updates = [policy.client_update(previous, view, client) for view, client in zip(views, clients, strict=True)]
    dp = spec.dp
    denominator = 1.0
    scales = weights
    if dp is not None:
        updates = [clip_update(update, dp.clip)[0] for update in updates]
        # DP-FedAvg's scales w_i / max w and denominator sum of them, as `noisy_aggregate` uses.
        scales = [w / max(weights) for w in weights]
        denominator = sum(scales)
    contributions = [_scaled(update, s) for update, s in zip(updates, scales, strict=True)]
    total, traffic = _split_sum(summer, contributions, clients, held, roster, round_index)
    if total is None:
        return None, traffic
    sigma = 0.0 if dp is None or dp.noise_multiplier is None else dp.noise_multiplier
    step: AdapterState = {}
    for key in updates[0]:  # the key order `noisy_aggregate` draws its noise in
        summed = total[key]
        if dp is not None and sigma > 0:
            summed = summed + sigma * dp.clip * gaussian_like(summed, policy.generator)
        step[key] = summed / denominator
    policy.close(round_index, clients)
    return {key: (value.to(torch.float64) + step[key]).to(value.dtype) for key, value in previous.items()}, traffic


def _scaled(state: Mapping[str, torch.Tensor], factor: float) -> AdapterState:
    return {key: value.detach().to(torch.float64) * factor for key, value in state.items()}


def _split_sum(
    summer: SecureSummer,
    contributions: Sequence[AdapterState],
    clients: Sequence[str],
    held: Sequence[frozenset[str]],
    roster: Sequence[str],
    round_index: int,
) -> tuple[AdapterState | None, ProtocolTraffic]:
    """The sum of the contributions: device-held keys through the protocol, the server's own keys in the clear."""
    private = {
        client: {key: value for key, value in part.items() if key in keys}
        for client, part, keys in zip(clients, contributions, held, strict=True)
    }
    secret, traffic = summer.sum(private, roster, round_index)
    if secret is None:
        return None, traffic
    total: AdapterState = {}
    for key, reference in contributions[0].items():
        acc = secret[key].clone() if key in secret else torch.zeros(reference.shape, dtype=torch.float64)
        for part, keys in zip(contributions, held, strict=True):
            if key not in keys:
                acc += part[key]
        total[key] = acc
    return total, traffic
