"""The server side of the protocol: collects each round's messages, then closes the round.

The server is a state machine with one collecting phase per round. `receive` takes a client message
and refuses it unless it belongs to the current round, comes from a client of the previous round's set
and is well formed; an identical resend is ignored, a different one refused. `end_*` closes a round once
the caller (a simulation, or a deployment after its timeout) decides no more messages will come, checks
that at least `threshold` clients took part, and returns what goes out to the clients.

The server never sees an unmasked input: it sums masked vectors as they arrive, and after round 3
removes the survivors' self masks and the dropped clients' pairwise masks from that sum.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fleettune.privacy.secagg import crypto, prg, shamir
from fleettune.privacy.secagg.config import SecAggConfig
from fleettune.privacy.secagg.errors import SecAggError
from fleettune.privacy.secagg.messages import (
    KIND_NAMES,
    AdvertiseKeys,
    MaskedInput,
    Message,
    Roster,
    RosterEntry,
    SealedShare,
    ShareBundle,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from fleettune.privacy.secagg.ring import RingVector

PHASES = ("advertise", "share_keys", "masked_input", "unmask", "done")
_EXPECTED: dict[str, type[Message]] = {
    "advertise": AdvertiseKeys,
    "share_keys": ShareKeys,
    "masked_input": MaskedInput,
    "unmask": UnmaskResponse,
}
_SET_NAMES = {
    "share_keys": "the round-0 set (clients that advertised keys)",
    "masked_input": "the round-1 set (clients that shared keys)",
    "unmask": "the round-2 set (clients whose masked input arrived)",
}


@dataclass(frozen=True, eq=False)
class Aggregate:
    """The outcome: the sum of the included clients' encoded inputs, in the ring and decoded to floats."""

    ring_sum: RingVector
    values: NDArray[np.float64]
    included: tuple[str, ...]  # clients whose masked inputs arrived: their inputs are in the sum
    dropped: tuple[str, ...]  # round-1 clients whose masked inputs never arrived: not in the sum
    responders: tuple[str, ...]  # clients whose round-3 shares unmasked the sum


class SecAggServer:
    """The server of one aggregation."""

    def __init__(self, config: SecAggConfig) -> None:
        self.config = config
        self._phase = "advertise"
        self._digests: dict[tuple[str, str], bytes] = {}
        self._advertised: dict[str, AdvertiseKeys] = {}
        self._roster: dict[str, RosterEntry] = {}
        self._shared: dict[str, ShareKeys] = {}
        self._masked: set[str] = set()
        self._sum = config.codec.ring.zeros(config.vector_length)
        self._request: UnmaskRequest | None = None
        self._responses: dict[str, UnmaskResponse] = {}
        self._seed_shares: dict[str, dict[str, int]] = {}  # survivor -> responder -> share of its self-mask seed
        self._key_shares: dict[str, dict[str, int]] = {}  # dropped client -> responder -> share of its mask key

    @property
    def phase(self) -> str:
        return self._phase

    # Receiving -------------------------------------------------------------------------------------------
    def receive(self, message: Message) -> None:
        """Accept one client message of the current round, or raise SecAggError saying why not."""
        name = KIND_NAMES[message.KIND]
        if self._phase == "done":
            raise SecAggError(f"{name} arrived after the aggregation finished")
        expected = _EXPECTED[self._phase]
        if not isinstance(message, expected):
            raise SecAggError(f"{name} arrived while the server collects {KIND_NAMES[expected.KIND]}; out of phase")
        assert isinstance(message, AdvertiseKeys | ShareKeys | MaskedInput | UnmaskResponse)
        sender = message.sender
        if not self.config.knows(sender):
            raise SecAggError(
                f"{name} from unknown client {sender!r}; expected one of the {self.config.n} configured clients"
            )
        if message.tag != self.config.aggregation_tag:
            raise SecAggError(
                f"{name} from {sender!r} belongs to another aggregation (tag "
                f"{message.tag.hex()}, expected {self.config.aggregation_tag.hex()})"
            )
        previous = {
            "advertise": self.config.clients,
            "share_keys": self._advertised,
            "masked_input": self._shared,
            "unmask": self._masked,
        }[self._phase]
        if sender not in previous:
            raise SecAggError(f"{name} from {sender!r}, which is not in {_SET_NAMES[self._phase]}")
        try:
            digest = hashlib.sha256(message.to_bytes()).digest()
        except ValueError as exc:  # a message object built by hand with fields the wire format cannot carry
            raise SecAggError(f"malformed {name} from {sender!r}: {exc}") from None
        seen = self._digests.get((self._phase, sender))
        if seen is not None:
            if seen != digest:
                raise SecAggError(f"client {sender!r} sent a second, different {name}")
            return  # an identical resend
        if isinstance(message, AdvertiseKeys):
            self._take_advertise(message)
        elif isinstance(message, ShareKeys):
            self._take_share_keys(message)
        elif isinstance(message, MaskedInput):
            self._take_masked_input(message)
        else:
            self._take_unmask(message)
        self._digests[(self._phase, sender)] = digest

    def _take_advertise(self, m: AdvertiseKeys) -> None:
        if len(m.enc_public) != crypto.KEY_BYTES or len(m.mask_public) != crypto.KEY_BYTES:
            raise SecAggError(f"AdvertiseKeys from {m.sender!r} carries a key that is not {crypto.KEY_BYTES} bytes")
        if m.enc_public == m.mask_public:
            raise SecAggError(f"AdvertiseKeys from {m.sender!r} uses one key for both purposes")
        for other in self._advertised.values():
            if {m.enc_public, m.mask_public} & {other.enc_public, other.mask_public}:
                raise SecAggError(f"AdvertiseKeys from {m.sender!r} repeats a public key of {other.sender!r}")
        self._advertised[m.sender] = m

    def _take_share_keys(self, m: ShareKeys) -> None:
        receivers = [s.receiver for s in m.shares]
        wanted = set(self._roster) - {m.sender}
        if len(set(receivers)) != len(receivers) or set(receivers) != wanted:
            raise SecAggError(
                f"ShareKeys from {m.sender!r} must carry one share for each other roster client: missing "
                f"{sorted(wanted - set(receivers))}, unexpected {sorted(set(receivers) - wanted)}, "
                f"{len(receivers) - len(set(receivers))} repeated"
            )
        if any(s.sender != m.sender for s in m.shares):
            raise SecAggError(f"ShareKeys from {m.sender!r} carries a share of another sender")
        self._shared[m.sender] = m

    def _take_masked_input(self, m: MaskedInput) -> None:
        codec = self.config.codec
        if m.ring_bits != codec.ring_bits:
            raise SecAggError(
                f"MaskedInput from {m.sender!r} is in a {m.ring_bits}-bit ring; expected {codec.ring_bits}"
            )
        if m.masked.shape != (self.config.vector_length,):
            raise SecAggError(
                f"MaskedInput from {m.sender!r} holds shape {m.masked.shape}; expected ({self.config.vector_length},)"
            )
        self._sum = codec.ring.add(self._sum, m.masked.astype(codec.ring.dtype, copy=False))
        self._masked.add(m.sender)

    def _take_unmask(self, m: UnmaskResponse) -> None:
        assert self._request is not None
        parsed: list[tuple[dict[str, dict[str, int]], str, int]] = []
        for group, wanted, kind, store in (
            (m.self_mask_shares, self._request.survivors, "self-mask seed", self._seed_shares),
            (m.mask_key_shares, self._request.dropped, "mask key", self._key_shares),
        ):
            owners = [owner for owner, _ in group]
            if owners != list(wanted):
                raise SecAggError(
                    f"UnmaskResponse from {m.sender!r} carries {kind} shares of {owners}; expected {list(wanted)}"
                )
            parsed.extend((store, owner, shamir.share_from_bytes(share)) for owner, share in group)
        for store, owner, value in parsed:
            store.setdefault(owner, {})[m.sender] = value
        self._responses[m.sender] = m

    # Closing rounds --------------------------------------------------------------------------------------
    def _close(self, phase: str, present: int, what: str) -> None:
        if self._phase != phase:
            raise SecAggError(f"cannot close round {phase!r} while the server is in phase {self._phase!r}")
        if present < self.config.threshold:
            raise SecAggError(f"only {present} clients {what}; the threshold is {self.config.threshold}")

    def end_advertise(self) -> Roster:
        """Close round 0: the roster of advertised keys, to send to every client in it."""
        self._close("advertise", len(self._advertised), "advertised keys")
        self._roster = {
            c: RosterEntry(c, self._advertised[c].enc_public, self._advertised[c].mask_public)
            for c in self.config.clients
            if c in self._advertised
        }
        self._phase = "share_keys"
        return Roster(self.config.aggregation_tag, tuple(self._roster.values()))

    def end_share_keys(self) -> dict[str, ShareBundle]:
        """Close round 1: for each client that shared keys, the sealed shares the others addressed to it."""
        self._close("share_keys", len(self._shared), "shared keys")
        senders = [c for c in self.config.clients if c in self._shared]
        inbox: dict[str, list[SealedShare]] = {c: [] for c in senders}
        for sender in senders:
            for sealed in self._shared[sender].shares:
                if sealed.receiver in inbox:
                    inbox[sealed.receiver].append(sealed)
        self._phase = "masked_input"
        return {c: ShareBundle(self.config.aggregation_tag, c, tuple(inbox[c])) for c in senders}

    def end_masked_input(self) -> UnmaskRequest:
        """Close round 2: who survived and who dropped, to send to every survivor."""
        self._close("masked_input", len(self._masked), "sent masked inputs")
        clients = self.config.clients
        survivors = tuple(c for c in clients if c in self._masked)
        dropped = tuple(c for c in clients if c in self._shared and c not in self._masked)
        self._request = UnmaskRequest(self.config.aggregation_tag, survivors, dropped)
        self._phase = "unmask"
        return self._request

    def end_unmasking(self) -> Aggregate:
        """Close round 3: rebuild the secrets from the responders' shares and strip every mask from the sum."""
        self._close("unmask", len(self._responses), "answered the unmask request")
        assert self._request is not None
        config, ring = self.config, self.config.codec.ring
        responders = tuple(c for c in config.clients if c in self._responses)
        total = self._sum
        for owner in self._request.survivors:
            seed = self._rebuild(owner, self._seed_shares[owner], "self-mask seed")
            total = ring.sub(total, prg.expand(seed, config.vector_length, ring, prg.SELF_MASK))
        for owner in self._request.dropped:
            key = crypto.load_private(self._rebuild(owner, self._key_shares[owner], "mask key"))
            if crypto.public_bytes(key) != self._roster[owner].mask_public:
                raise SecAggError(f"rebuilt mask key of {owner!r} does not match its advertised public key")
            for survivor in self._request.survivors:
                seed = crypto.agree(
                    key,
                    self._roster[survivor].mask_public,
                    crypto.MASK_SEED,
                    config.aggregation_tag,
                    config.ordered(owner, survivor),
                )
                mask = prg.expand(seed, config.vector_length, ring, prg.PAIR_MASK)
                # the survivor applied this mask with its own sign: undo exactly that
                total = ring.sub(total, mask) if config.mask_sign(survivor, owner) > 0 else ring.add(total, mask)
        self._phase = "done"
        return Aggregate(total, config.codec.decode(total), self._request.survivors, self._request.dropped, responders)

    def _rebuild(self, owner: str, by_responder: dict[str, int], what: str) -> bytes:
        """One secret of `owner` from the responders' shares: threshold + 1 of them, so one bad share shows."""
        config = self.config
        chosen = [c for c in config.clients if c in by_responder][: config.threshold + 1]
        try:
            value = shamir.reconstruct({config.index(c): by_responder[c] for c in chosen}, config.threshold)
            return shamir.int_to_secret(value)
        except SecAggError as exc:
            raise SecAggError(f"cannot rebuild the {what} of {owner!r}: {exc}") from None
