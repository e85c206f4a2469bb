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

from fleettune.aggregation.secure import (
    Weighting,
    add_in_clear,
    aggregation_id,
    contribution,
    open_sum,
    template_of,
    weighting,
)
from fleettune.models.adapters import AdapterState
from fleettune.privacy.secagg import (
    AdvertiseKeys,
    ClientMessage,
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
    """Every active device puts its adapter part into a secure sum. Returns the devices whose masked inputs are
    in the sum (all that completed the round) and the new global adapter, or, when the protocol aborted (fewer
    than the threshold of devices took part), the devices that did their part and None: nothing changes then."""
    policy = c.policy
    summer = policy.secure
    assert summer is not None, "the run has no secure aggregation"
    spec = summer.spec
    roster = list(active)
    if len(roster) < spec.threshold:
        summer.totals.aborted += 1
        return roster, None
    previous = c.current.evaluation
    template = template_of(c.client_part(m, previous) for m in roster)
    weights = weighting(policy.spec, [m.samples for m in roster])
    codec = spec.codec(len(roster))
    ids = tuple(m.id for m in roster)
    server = SecAggServer(
        SecAggConfig(ids, spec.threshold, flatten_state(template)[0].size, codec, aggregation_id(round_index))
    )
    dp = policy.spec.dp
    setups = {
        m.id: SecureRound(
            ids,
            spec.threshold,
            codec.frac_bits,
            codec.clip,
            codec.ring_bits,
            round_index,
            layout_of(template),
            weights.scales[i],
            None if dp is None else dp.clip,
            weights.updates,
        ).to_json()
        for i, m in enumerate(roster)
    }
    sent = {m.id: 0 for m in roster}  # protocol bytes per device, the masked input excepted (it is the upload)
    received = {m.id: 0 for m in roster}

    def phase(members: Sequence[Member], name: str, payloads: Mapping[str, bytes], parse: Parse) -> list[Member]:
        """One protocol round: the devices whose replies the server took."""
        for m in members:
            c.traffic.down(m.id, payloads.get(m.id, b""), SECAGG)
            received[m.id] += len(payloads.get(m.id, b""))

        def ask(m: Member) -> tuple[Instruction, Expected]:
            detail = setups[m.id] if name == ADVERTISE else ""
            instruction = Instruction(
                Do.SECAGG, round_index, payload=payloads.get(m.id, b""), phase=name, detail=detail
            )
            return instruction, Expected(f"secagg-{name}", round_index)

        replies = exchange(c, members, ask)
        taken = []
        for m in members:
            reply = replies.get(m.id)
            if not reply:
                continue
            c.traffic.up(m.id, reply, ADAPTER if name == MASKED_INPUT else SECAGG)
            if name != MASKED_INPUT:
                sent[m.id] += len(reply)
            try:
                message = parse(reply)
                if message.sender != m.id:
                    raise SecAggError(f"a message signed {message.sender!r} came from device {m.id}")
                server.receive(message)
            except (SecAggError, ValueError) as exc:
                log.warning("device %s: secure aggregation %s refused: %s", m.id, name, exc)
                continue
            taken.append(m)
        return taken

    alive = roster  # the devices that answered every phase so far
    try:
        alive = phase(alive, ADVERTISE, {}, AdvertiseKeys.from_bytes)
        listed = server.end_advertise().to_bytes()
        alive = phase(alive, SHARE_KEYS, dict.fromkeys(ids, listed), ShareKeys.from_bytes)
        bundles = {client: bundle.to_bytes() for client, bundle in server.end_share_keys().items()}
        alive = phase(alive, MASKED_INPUT, bundles, MaskedInput.from_bytes)
        request = server.end_masked_input().to_bytes()
        phase(alive, UNMASK, dict.fromkeys(ids, request), UnmaskResponse.from_bytes)
        opened = server.end_unmasking()
    except SecAggError as exc:
        log.warning("round %d: secure aggregation aborted: %s", round_index + 1, exc)
        summer.totals.aborted += 1
        return alive, None
    included = [m for m in roster if m.id in set(opened.included)]
    summer.note(
        {m.id: {SECAGG: sent[m.id]} for m in roster},
        {m.id: {SECAGG: received[m.id]} for m in roster},
        sum(c.clipped.get(m.id, 0) for m in included),
        codec,
    )
    secret = unflatten_state(opened.values, flatten_state(template)[1])
    return included, _open(c, previous, secret, weights, roster, included, round_index)


Parse = Callable[[bytes], ClientMessage]


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
    if c.role is not None:
        assert not weights.updates, "split schemes aggregate adapters, not clipped updates (the config refuses)"
        in_clear = [contribution(c.role.server_part(m.id), scales[m.id]) for m in included]
    total = add_in_clear(secret, in_clear, previous)
    if len(included) < len(roster):
        share = [scales[m.id] for m in included]
        if weights.updates:
            weights = Weighting(tuple(share), sum(share), updates=True)
        else:
            total = {key: value / sum(share) for key, value in total.items()}
    return open_sum(c.policy, previous, total, weights, [m.id for m in included], round_index)
