"""The client side of the protocol: a state machine that turns each server message into its next message.

Phases: new -> advertised -> shared -> masked -> unmasked. Each step accepts only the message of its
phase and checks it (aggregation tag, addressee, membership, authenticity) before using it. The round-3 step
enforces the protocol's core rule: for any one peer a client reveals either its share of the peer's
self-mask seed (the peer survived) or its share of the peer's mask key (the peer dropped), never both,
not even across repeated or contradictory unmask requests.
"""

from __future__ import annotations

from typing import Any

from fleettune.privacy.secagg import crypto, prg, shamir
from fleettune.privacy.secagg.config import SecAggConfig
from fleettune.privacy.secagg.errors import SecAggError
from fleettune.privacy.secagg.messages import (
    AdvertiseKeys,
    MaskedInput,
    Roster,
    RosterEntry,
    SealedShare,
    ShareBundle,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from fleettune.privacy.secagg.randomness import RandomSource, resolve
from fleettune.privacy.secagg.vectors import as_vector

SELF_MASK_SHARE = "self-mask seed"
MASK_KEY_SHARE = "mask key"


class SecAggClient:
    """One client of one aggregation. Create a new client (fresh keys and seed) for every aggregation."""

    def __init__(self, client_id: str, config: SecAggConfig, rng: RandomSource | int | None = None) -> None:
        if not config.knows(client_id):
            raise ValueError(f"client {client_id!r} is not among the {config.n} clients of this aggregation")
        self.id = client_id
        self.config = config
        self._rng = resolve(rng)
        self._phase = "new"
        self._enc_key = crypto.new_private_key(self._rng)
        self._mask_key = crypto.new_private_key(self._rng)
        self._self_seed = self._rng.token_bytes(prg.SEED_BYTES)
        self._roster: dict[str, RosterEntry] = {}
        self._shares: dict[str, tuple[int, int]] = {}  # owner -> (self-mask seed share, mask key share) held here
        self._round1: tuple[str, ...] = ()
        self._revealed: dict[str, str] = {}
        self.clipped = 0  # entries of the input that fell outside the codec's clipping range

    @property
    def phase(self) -> str:
        return self._phase

    def _expect(self, phase: str, step: str) -> None:
        if self._phase != phase:
            raise SecAggError(f"client {self.id!r} cannot {step} in phase {self._phase!r}; expected phase {phase!r}")

    def _check_tag(self, tag: bytes, what: str) -> None:
        if tag != self.config.aggregation_tag:
            raise SecAggError(
                f"{what} belongs to another aggregation (tag {tag.hex()}, expected {self.config.aggregation_tag.hex()})"
            )

    def _share_key(self, peer: str) -> bytes:
        """The AES-GCM key this client and `peer` agree for the shares they send each other."""
        public = self._roster[peer].enc_public
        return crypto.agree(self._enc_key, public, crypto.SHARE_KEY, self.config.aggregation_tag, self._pair(peer))

    def _pair_seed(self, peer: str) -> bytes:
        """The seed of the pairwise mask this client shares with `peer`."""
        public = self._roster[peer].mask_public
        return crypto.agree(self._mask_key, public, crypto.MASK_SEED, self.config.aggregation_tag, self._pair(peer))

    def _pair(self, peer: str) -> tuple[str, str]:
        return self.config.ordered(self.id, peer)

    # Round 0 ---------------------------------------------------------------------------------------------
    def advertise(self) -> AdvertiseKeys:
        """Round 0: the client's two public keys."""
        self._expect("new", "advertise keys")
        self._phase = "advertised"
        return AdvertiseKeys(
            self.config.aggregation_tag,
            self.id,
            crypto.public_bytes(self._enc_key),
            crypto.public_bytes(self._mask_key),
        )

    # Round 1 ---------------------------------------------------------------------------------------------
    def share_keys(self, roster: Roster) -> ShareKeys:
        """Round 1: Shamir-share the self-mask seed and the mask private key, sealing each peer's pair of shares."""
        self._expect("advertised", "share keys")
        self._check_tag(roster.tag, "Roster")
        self._roster = self._checked_roster(roster)
        holders = list(self._roster)
        config = self.config
        points = [config.index(c) for c in holders]
        seed_shares = shamir.split(shamir.secret_to_int(self._self_seed), config.threshold, points, self._rng)
        key_shares = shamir.split(
            shamir.secret_to_int(crypto.private_bytes(self._mask_key)), config.threshold, points, self._rng
        )
        sealed: list[SealedShare] = []
        for peer in holders:
            x = config.index(peer)
            if peer == self.id:
                self._shares[peer] = (seed_shares[x], key_shares[x])
                continue
            plaintext = shamir.share_to_bytes(seed_shares[x]) + shamir.share_to_bytes(key_shares[x])
            key = self._share_key(peer)
            ad = crypto.share_associated_data(config.aggregation_tag, self.id, peer)
            sealed.append(SealedShare(self.id, peer, crypto.seal(key, plaintext, ad, self._rng)))
        self._phase = "shared"
        return ShareKeys(config.aggregation_tag, self.id, tuple(sealed))

    def _checked_roster(self, roster: Roster) -> dict[str, RosterEntry]:
        entries: dict[str, RosterEntry] = {}
        for e in roster.entries:
            if not self.config.knows(e.client):
                raise SecAggError(f"Roster names unknown client {e.client!r}; expected only configured clients")
            if e.client in entries:
                raise SecAggError(f"Roster lists client {e.client!r} twice")
            if len(e.enc_public) != crypto.KEY_BYTES or len(e.mask_public) != crypto.KEY_BYTES:
                raise SecAggError(f"Roster carries a malformed public key for client {e.client!r}")
            entries[e.client] = e
        own = entries.get(self.id)
        if own is None:
            raise SecAggError(f"Roster leaves out client {self.id!r} itself")
        if (own.enc_public, own.mask_public) != (
            crypto.public_bytes(self._enc_key),
            crypto.public_bytes(self._mask_key),
        ):
            raise SecAggError(f"Roster carries public keys for client {self.id!r} that are not its own")
        keys = [e.enc_public for e in entries.values()] + [e.mask_public for e in entries.values()]
        if len(set(keys)) != len(keys):
            raise SecAggError("Roster repeats a public key; expected every key to be distinct")
        if len(entries) < self.config.threshold:
            raise SecAggError(f"Roster holds {len(entries)} clients; the threshold is {self.config.threshold}")
        return {c: entries[c] for c in self.config.clients if c in entries}

    # Round 2 ---------------------------------------------------------------------------------------------
    def mask_input(self, bundle: ShareBundle, vector: Any) -> MaskedInput:
        """Round 2: store the peers' shares, then send the encoded `vector` plus self mask plus pairwise masks.

        The pairwise masks cover exactly the clients whose shares arrived in `bundle` (the round-1 set).
        """
        self._expect("shared", "mask its input")
        config = self.config
        self._check_tag(bundle.tag, "ShareBundle")
        if bundle.receiver != self.id:
            raise SecAggError(f"ShareBundle addressed to {bundle.receiver!r} reached client {self.id!r}")
        x = as_vector(vector)
        if x.size != config.vector_length:
            raise ValueError(
                f"client {self.id!r} input has {x.size} values; the aggregation expects {config.vector_length}"
            )
        received: dict[str, tuple[int, int]] = {}
        for s in bundle.shares:
            if s.sender not in self._roster or s.sender == self.id:
                raise SecAggError(f"ShareBundle holds a share from {s.sender!r}, which is not another roster client")
            if s.sender in received:
                raise SecAggError(f"ShareBundle holds two shares from {s.sender!r}")
            key = self._share_key(s.sender)
            ad = crypto.share_associated_data(config.aggregation_tag, s.sender, self.id)
            plain = crypto.open_sealed(key, s.sealed, ad, f"share from {s.sender!r} to {self.id!r}")
            if len(plain) != 2 * shamir.SHARE_BYTES:
                raise SecAggError(
                    f"share from {s.sender!r} holds {len(plain)} bytes; expected {2 * shamir.SHARE_BYTES}"
                )
            received[s.sender] = (
                shamir.share_from_bytes(plain[: shamir.SHARE_BYTES]),
                shamir.share_from_bytes(plain[shamir.SHARE_BYTES :]),
            )
        if len(received) + 1 < config.threshold:
            raise SecAggError(f"only {len(received) + 1} clients shared keys; the threshold is {config.threshold}")
        self._shares.update(received)
        self._round1 = tuple(c for c in config.clients if c in self._shares)

        ring = config.codec.ring
        self.clipped = config.codec.clipped(x)
        masked = ring.add(
            config.codec.encode(x), prg.expand(self._self_seed, config.vector_length, ring, prg.SELF_MASK)
        )
        for peer in self._round1:
            if peer == self.id:
                continue
            seed = self._pair_seed(peer)
            mask = prg.expand(seed, config.vector_length, ring, prg.PAIR_MASK)
            masked = ring.add(masked, mask) if config.mask_sign(self.id, peer) > 0 else ring.sub(masked, mask)
        self._phase = "masked"
        return MaskedInput(config.aggregation_tag, self.id, ring.bits, masked)

    # Round 3 ---------------------------------------------------------------------------------------------
    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Round 3: shares of the survivors' self-mask seeds and of the dropped clients' mask keys.

        Refuses a request that names a client both ways, disagrees with the round-1 set, leaves this client
        out, falls below the threshold, or contradicts an earlier request (repeating one is allowed).
        """
        if self._phase not in ("masked", "unmasked"):
            raise SecAggError(f"client {self.id!r} cannot unmask in phase {self._phase!r}; expected phase 'masked'")
        self._check_tag(request.tag, "UnmaskRequest")
        survivors, dropped = set(request.survivors), set(request.dropped)
        if len(survivors) != len(request.survivors) or len(dropped) != len(request.dropped):
            raise SecAggError("UnmaskRequest lists a client twice in one group")
        both = survivors & dropped
        if both:
            raise SecAggError(
                f"client {self.id!r} refuses to reveal both the self-mask seed share and the mask key share of "
                f"{sorted(both)}"
            )
        for owner in survivors:
            if self._revealed.get(owner, SELF_MASK_SHARE) != SELF_MASK_SHARE:
                raise SecAggError(
                    f"client {self.id!r} already revealed the mask key share of {owner!r}; "
                    f"refusing its self-mask seed share"
                )
        for owner in dropped:
            if self._revealed.get(owner, MASK_KEY_SHARE) != MASK_KEY_SHARE:
                raise SecAggError(
                    f"client {self.id!r} already revealed the self-mask seed share of {owner!r}; "
                    f"refusing its mask key share"
                )
        round1 = set(self._round1)
        if survivors | dropped != round1:
            raise SecAggError(
                "UnmaskRequest does not partition the round-1 clients: "
                f"unknown {sorted((survivors | dropped) - round1)}, missing {sorted(round1 - survivors - dropped)}"
            )
        if self.id not in survivors:
            raise SecAggError(f"UnmaskRequest counts client {self.id!r} as dropped, but it sent its masked input")
        if len(survivors) < self.config.threshold:
            raise SecAggError(
                f"UnmaskRequest names {len(survivors)} survivors; the threshold is {self.config.threshold}"
            )
        self._revealed.update({owner: SELF_MASK_SHARE for owner in survivors})
        self._revealed.update({owner: MASK_KEY_SHARE for owner in dropped})
        self._phase = "unmasked"
        order = self.config.clients
        return UnmaskResponse(
            self.config.aggregation_tag,
            self.id,
            tuple((c, shamir.share_to_bytes(self._shares[c][0])) for c in order if c in survivors),
            tuple((c, shamir.share_to_bytes(self._shares[c][1])) for c in order if c in dropped),
        )
