"""Secure aggregation between real devices: the server's side of the protocol in place of the adapter uploads.

The server runs `SecAggServer`, each device a `SecAggClient` with its own secrets (`secure_device`); every
phase is one exchange of instructions and replies. Devices weight (and with DP clip) what they mask exactly as
the simulation's clients do (`aggregation.secure`), so the opened sum, and with it the new global adapter, equals
the simulation's, and so do the bytes. A device that fails a phase, or whose message is refused, is out of the
aggregation (and of the round); the sum opens if enough masked inputs arrived.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import torch

from fleettune.aggregation.secure import (
    Weighting,
    add_in_clear,
    aggregation_id,
    contribution,
    open_sum,
    weighting,
)
from fleettune.aggregation.sum_groups import SumGroup, sum_groups
from fleettune.models.adapters import AdapterState
from fleettune.privacy.secagg import (
    AdvertiseKeys,
    ClientMessage,
    FixedPoint,
    MaskedInput,
    SecAggConfig,
    SecAggError,
    SecAggServer,
    ShareKeys,
    UnmaskResponse,
    flatten_state,
    unflatten_state,
)
from fleettune.runtime.ledger import ADAPTER, SECAGG
from fleettune.runtime.net.board import Expected, Member
from fleettune.runtime.net.coordinator import Coordinator
from fleettune.runtime.net.protocol import Do, Instruction
from fleettune.runtime.net.secure_device import ADVERTISE, MASKED_INPUT, SHARE_KEYS, UNMASK
from fleettune.runtime.net.secure_round import SecureRound, layout_of
from fleettune.runtime.net.steps import exchange

log = logging.getLogger("fleettune.net")


def collect_securely(
    c: Coordinator, active: Sequence[Member], round_index: int
) -> tuple[list[Member], AdapterState | None]:
    """Every active device puts its adapter part into secure sums, one protocol instance per group of keys
    (`sum_groups`). Returns the devices whose masked inputs are in the sums (all that completed the round) and the
    new global adapter, or, when the protocol aborted (too few devices took part), the devices that answered
    every phase and None: nothing changes then."""
    policy = c.policy
    summer = policy.secure
    assert summer is not None, "the run has no secure aggregation"
    roster = list(active)
    if len(roster) < summer.spec.threshold:
        summer.totals.aborted += 1
        return roster, None
    previous = c.current.evaluation
    groups = sum_groups({m.id: c.client_part(m, previous) for m in roster}, summer.spec.threshold)
    weights = weighting(policy.spec, [m.samples for m in roster])
    run = _SecureRun(c, round_index, roster, weights)
    c.clipped.clear()
    secret: AdapterState = {}
    kept: list[Member] = []
    try:
        opened = []
        for included, part in run.sums(groups):
            secret.update(part)
            opened.append(included)
        for m in roster:
            inside = [m.id in included for group, included in zip(groups, opened, strict=True) if m.id in group.clients]
            if all(inside):
                kept.append(m)
            elif any(inside):  # it left between two of its masked inputs: its weight would differ by key
                raise SecAggError(f"device {m.id}'s inputs are in some of its groups' sums only")
    except SecAggError as exc:
        log.warning("round %d: secure aggregation aborted: %s", round_index + 1, exc)
        summer.totals.aborted += 1
        return [m for m in roster if m.id in run.alive], None
    summer.note(run.sent, run.received, sum(c.clipped.get(m.id, 0) for m in kept), run.resolution)
    return kept, _open(c, previous, secret, weights, roster, kept, round_index)


Parse = Callable[[bytes], ClientMessage]


class _SecureRun:
    """One aggregation's protocol instances, run group by group, phase by phase, over the board."""

    def __init__(self, c: Coordinator, round_index: int, roster: Sequence[Member], weights: Weighting) -> None:
        self.c, self.round_index, self.roster, self.weights = c, round_index, list(roster), weights
        self.sent = {m.id: {SECAGG: 0} for m in roster}  # protocol bytes, the masked inputs excepted (the upload)
        self.received = {m.id: {SECAGG: 0} for m in roster}
        self.alive = {m.id for m in roster}  # devices that answered every phase so far
        self.resolution = 0.0

    def sums(self, groups: Sequence[SumGroup]) -> list[tuple[set[str], AdapterState]]:
        """Run the groups' protocol instances phase by phase (every group's masked inputs are in before any group
        unmasks, so a device that leaves after masking is in every sum); per group, the devices whose inputs are in
        its sum and the sum. SecAggError: the aggregation aborts."""
        summer = self.c.policy.secure
        assert summer is not None
        codecs = {g.index: summer.spec.codec(len(g.clients)) for g in groups}
        self.resolution = max(codec.resolution for codec in codecs.values())
        servers = {g.index: SecAggServer(self._config(g, codecs[g.index])) for g in groups}
        setups = {g.index: self._setups(g, codecs[g.index]) for g in groups}
        members = {g.index: [m for m in self.roster if m.id in g.clients] for g in groups}
        replies: dict[int, Mapping[str, bytes]] = {g.index: {} for g in groups}
        steps: list[tuple[str, Parse, Callable[[SecAggServer], Mapping[str, bytes] | bytes]]] = [
            (ADVERTISE, AdvertiseKeys.from_bytes, lambda server: server.end_advertise().to_bytes()),
            (
                SHARE_KEYS,
                ShareKeys.from_bytes,
                lambda server: {c: b.to_bytes() for c, b in server.end_share_keys().items()},
            ),
            (MASKED_INPUT, MaskedInput.from_bytes, lambda server: server.end_masked_input().to_bytes()),
            (UNMASK, UnmaskResponse.from_bytes, lambda server: b""),
        ]
        for name, parse, close in steps:
            for g in groups:
                server, asked = servers[g.index], [m for m in members[g.index] if m.id in self.alive]
                details = setups[g.index] if name == ADVERTISE else {}
                members[g.index] = self._phase(server, g, asked, name, replies[g.index], details, parse)
                if name != UNMASK:
                    out = close(server)
                    replies[g.index] = out if isinstance(out, Mapping) else dict.fromkeys(g.clients, out)
        opened = [servers[g.index].end_unmasking() for g in groups]
        return [
            (set(o.included), unflatten_state(o.values, flatten_state(g.template)[1]))
            for g, o in zip(groups, opened, strict=True)
        ]

    def _config(self, group: SumGroup, codec: FixedPoint) -> SecAggConfig:
        name = aggregation_id(self.round_index, group.index)
        return SecAggConfig(group.clients, group.threshold, group.size, codec, name)

    def _setups(self, group: SumGroup, codec: FixedPoint) -> dict[str, str]:
        """What each of the group's devices is told in the advertise phase (its own weight included)."""
        spec = self.c.policy.spec
        scales = {m.id: s for m, s in zip(self.roster, self.weights.scales, strict=True)}
        return {
            client: SecureRound(
                clients=group.clients,
                threshold=group.threshold,
                frac_bits=codec.frac_bits,
                value_range=codec.clip,
                ring_bits=codec.ring_bits,
                round=self.round_index,
                group=group.index,
                layout=layout_of(group.template),
                scale=scales[client],
                clip=None if spec.dp is None else spec.dp.clip,
                updates=self.weights.updates,
            ).to_json()
            for client in group.clients
        }

    def _phase(
        self,
        server: SecAggServer,
        group: SumGroup,
        members: Sequence[Member],
        name: str,
        payloads: Mapping[str, bytes],
        details: Mapping[str, str],
        parse: Parse,
    ) -> list[Member]:
        """One protocol round of one group: the devices whose replies the server took."""
        c = self.c
        for m in members:
            c.traffic.down(m.id, payloads.get(m.id, b""), SECAGG)
            self.received[m.id][SECAGG] += len(payloads.get(m.id, b""))

        def ask(m: Member) -> tuple[Instruction, Expected]:
            payload, detail = payloads.get(m.id, b""), details.get(m.id, "")
            instruction = Instruction(
                Do.SECAGG, self.round_index, payload=payload, phase=name, group=group.index, detail=detail
            )
            return instruction, Expected(f"secagg-{group.index}-{name}", self.round_index)

        replies = exchange(c, members, ask)
        taken = []
        for m in members:
            reply = replies.get(m.id)
            if not reply:
                self.alive.discard(m.id)
                continue
            c.traffic.up(m.id, reply, ADAPTER if name == MASKED_INPUT else SECAGG)
            if name != MASKED_INPUT:
                self.sent[m.id][SECAGG] += len(reply)
            try:
                message = parse(reply)
                if message.sender != m.id:
                    raise SecAggError(f"a message signed {message.sender!r} came from device {m.id}")
                server.receive(message)
            except (SecAggError, ValueError) as exc:
                log.warning("device %s: secure aggregation %s refused: %s", m.id, name, exc)
                self.alive.discard(m.id)
                continue
            taken.append(m)
        return taken


def _open(
    c: Coordinator,
    previous: AdapterState,
    secret: AdapterState,
    weights: Weighting,
    roster: Sequence[Member],
    included: Sequence[Member],
    round_index: int,
) -> AdapterState:
    """The new global adapter: the secret sum plus the server's own parts (split schemes) in the clear, over the
    included devices' weights when some dropped out after the weights were fixed."""
    scales = {m.id: s for m, s in zip(roster, weights.scales, strict=True)}
    in_clear = []
    if c.role is not None:  # unclipped: the config refuses DP's clipping in the split schemes
        parts = {m.id: c.role.server_part(m.id) for m in included}
        if weights.updates:  # a server optimizer steps with the mean update: the server's parts enter as updates
            parts = {
                who: {k: v.to(torch.float64) - previous[k].to(torch.float64) for k, v in part.items()}
                for who, part in parts.items()
            }
        in_clear = [contribution(parts[m.id], scales[m.id]) for m in included]
    total = add_in_clear(secret, in_clear, previous)
    if len(included) < len(roster):
        share = [scales[m.id] for m in included]
        if weights.updates:
            weights = Weighting(tuple(share), sum(share), updates=True)
        else:
            total = {key: value / sum(share) for key, value in total.items()}
    return open_sum(c.policy, previous, total, weights, [m.id for m in included], round_index)
