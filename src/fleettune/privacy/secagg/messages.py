"""The seven messages of the protocol, each a dataclass with a compact, versioned binary encoding.

Round 0  client -> server  AdvertiseKeys   its two X25519 public keys
         server -> all     Roster          every advertised key pair
Round 1  client -> server  ShareKeys       Shamir shares of its secrets, sealed for each peer
         server -> client  ShareBundle     the sealed shares addressed to that client
Round 2  client -> server  MaskedInput     its encoded vector plus self mask plus pairwise masks
         server -> all     UnmaskRequest   who survived (sent a masked input) and who dropped
Round 3  client -> server  UnmaskResponse  self-mask-seed shares of survivors, mask-key shares of dropped clients

`tag` is the aggregation's 8-byte tag (`SecAggConfig.aggregation_tag`). Byte counts of `to_bytes()`
are what a deployment sends, so accounting built on them is real.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fleettune.privacy.secagg.config import AGGREGATION_TAG_BYTES
from fleettune.privacy.secagg.crypto import KEY_BYTES
from fleettune.privacy.secagg.errors import SecAggError
from fleettune.privacy.secagg.ring import Ring, RingVector
from fleettune.privacy.secagg.shamir import SHARE_BYTES
from fleettune.privacy.secagg.wire import MAGIC, Reader, Writer

KIND_NAMES = {
    1: "AdvertiseKeys (round 0)",
    2: "Roster (round 0 reply)",
    3: "ShareKeys (round 1)",
    4: "ShareBundle (round 1 reply)",
    5: "MaskedInput (round 2)",
    6: "UnmaskRequest (round 2 reply)",
    7: "UnmaskResponse (round 3)",
}


def _reader(data: bytes, kind: int) -> Reader:
    return Reader(data, kind, KIND_NAMES[kind], KIND_NAMES)


@dataclass(frozen=True)
class AdvertiseKeys:
    """Round 0, client to server: the public keys for share encryption and for pairwise masks."""

    KIND: ClassVar[int] = 1
    tag: bytes
    sender: str
    enc_public: bytes
    mask_public: bytes

    def to_bytes(self) -> bytes:
        w = Writer(self.KIND).fixed(self.tag, AGGREGATION_TAG_BYTES).text(self.sender)
        return w.fixed(self.enc_public, KEY_BYTES).fixed(self.mask_public, KEY_BYTES).build()

    @classmethod
    def from_bytes(cls, data: bytes) -> AdvertiseKeys:
        r = _reader(data, cls.KIND)
        message = cls(r.fixed(AGGREGATION_TAG_BYTES), r.text(), r.fixed(KEY_BYTES), r.fixed(KEY_BYTES))
        r.finish()
        return message


@dataclass(frozen=True)
class RosterEntry:
    client: str
    enc_public: bytes
    mask_public: bytes


@dataclass(frozen=True)
class Roster:
    """Round 0 reply, server to every advertising client: all advertised public keys."""

    KIND: ClassVar[int] = 2
    tag: bytes
    entries: tuple[RosterEntry, ...]

    def to_bytes(self) -> bytes:
        w = Writer(self.KIND).fixed(self.tag, AGGREGATION_TAG_BYTES).uint(len(self.entries), 4)
        for e in self.entries:
            w.text(e.client).fixed(e.enc_public, KEY_BYTES).fixed(e.mask_public, KEY_BYTES)
        return w.build()

    @classmethod
    def from_bytes(cls, data: bytes) -> Roster:
        r = _reader(data, cls.KIND)
        tag = r.fixed(AGGREGATION_TAG_BYTES)
        entries = tuple(RosterEntry(r.text(), r.fixed(KEY_BYTES), r.fixed(KEY_BYTES)) for _ in range(r.count()))
        r.finish()
        return cls(tag, entries)


@dataclass(frozen=True)
class SealedShare:
    """One client's shares for one peer, AES-GCM sealed; only the receiver can open it."""

    sender: str
    receiver: str
    sealed: bytes


@dataclass(frozen=True)
class ShareKeys:
    """Round 1, client to server: a sealed share pair (self-mask seed, mask key) for every other roster client."""

    KIND: ClassVar[int] = 3
    tag: bytes
    sender: str
    shares: tuple[SealedShare, ...]

    def to_bytes(self) -> bytes:
        w = Writer(self.KIND).fixed(self.tag, AGGREGATION_TAG_BYTES).text(self.sender).uint(len(self.shares), 4)
        for s in self.shares:
            if s.sender != self.sender:
                raise ValueError(f"a ShareKeys of {self.sender!r} cannot carry a share sealed by {s.sender!r}")
            w.text(s.receiver).blob(s.sealed)
        return w.build()

    @classmethod
    def from_bytes(cls, data: bytes) -> ShareKeys:
        r = _reader(data, cls.KIND)
        tag, sender = r.fixed(AGGREGATION_TAG_BYTES), r.text()
        shares = tuple(SealedShare(sender, r.text(), r.blob()) for _ in range(r.count()))
        r.finish()
        return cls(tag, sender, shares)


@dataclass(frozen=True)
class ShareBundle:
    """Round 1 reply, server to one client: the sealed shares the other round-1 clients addressed to it."""

    KIND: ClassVar[int] = 4
    tag: bytes
    receiver: str
    shares: tuple[SealedShare, ...]

    def to_bytes(self) -> bytes:
        w = Writer(self.KIND).fixed(self.tag, AGGREGATION_TAG_BYTES).text(self.receiver).uint(len(self.shares), 4)
        for s in self.shares:
            if s.receiver != self.receiver:
                raise ValueError(f"a ShareBundle for {self.receiver!r} cannot carry a share sealed for {s.receiver!r}")
            w.text(s.sender).blob(s.sealed)
        return w.build()

    @classmethod
    def from_bytes(cls, data: bytes) -> ShareBundle:
        r = _reader(data, cls.KIND)
        tag, receiver = r.fixed(AGGREGATION_TAG_BYTES), r.text()
        shares = tuple(SealedShare(r.text(), receiver, r.blob()) for _ in range(r.count()))
        r.finish()
        return cls(tag, receiver, shares)


@dataclass(frozen=True, eq=False)
class MaskedInput:
    """Round 2, client to server: the masked ring vector (uniformly random to anyone without the masks)."""

    KIND: ClassVar[int] = 5
    tag: bytes
    sender: str
    ring_bits: int
    masked: RingVector

    def to_bytes(self) -> bytes:
        ring = Ring(self.ring_bits)
        if self.masked.ndim != 1 or self.masked.dtype != ring.dtype:
            raise ValueError(
                f"masked vector must be 1-D {ring.dtype} for a {ring.bits}-bit ring, got "
                f"{self.masked.ndim}-D {self.masked.dtype}"
            )
        w = Writer(self.KIND).fixed(self.tag, AGGREGATION_TAG_BYTES).text(self.sender).uint(self.ring_bits, 1)
        w.uint(len(self.masked), 4)
        return w.build() + ring.to_bytes(self.masked)

    @classmethod
    def from_bytes(cls, data: bytes) -> MaskedInput:
        r = _reader(data, cls.KIND)
        tag, sender, bits = r.fixed(AGGREGATION_TAG_BYTES), r.text(), r.uint(1)
        try:
            ring = Ring(bits)
        except ValueError as exc:
            raise SecAggError(f"malformed MaskedInput: {exc}") from None
        length = r.uint(4)
        masked = ring.from_bytes(r.raw(length * ring.itemsize), length)
        r.finish()
        return cls(tag, sender, bits, masked)


@dataclass(frozen=True)
class UnmaskRequest:
    """Round 2 reply, server to surviving clients: which round-1 clients sent masked inputs and which did not."""

    KIND: ClassVar[int] = 6
    tag: bytes
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]

    def to_bytes(self) -> bytes:
        w = Writer(self.KIND).fixed(self.tag, AGGREGATION_TAG_BYTES)
        for group in (self.survivors, self.dropped):
            w.uint(len(group), 4)
            for client in group:
                w.text(client)
        return w.build()

    @classmethod
    def from_bytes(cls, data: bytes) -> UnmaskRequest:
        r = _reader(data, cls.KIND)
        tag = r.fixed(AGGREGATION_TAG_BYTES)
        survivors = tuple(r.text() for _ in range(r.count()))
        dropped = tuple(r.text() for _ in range(r.count()))
        r.finish()
        return cls(tag, survivors, dropped)


@dataclass(frozen=True)
class UnmaskResponse:
    """Round 3, client to server: its share of each survivor's self-mask seed and of each dropped client's mask key.

    Never both kinds for one client: that would hand the server the means to unmask that client's input.
    """

    KIND: ClassVar[int] = 7
    tag: bytes
    sender: str
    self_mask_shares: tuple[tuple[str, bytes], ...]
    mask_key_shares: tuple[tuple[str, bytes], ...]

    def to_bytes(self) -> bytes:
        w = Writer(self.KIND).fixed(self.tag, AGGREGATION_TAG_BYTES).text(self.sender)
        for group in (self.self_mask_shares, self.mask_key_shares):
            w.uint(len(group), 4)
            for owner, share in group:
                w.text(owner).fixed(share, SHARE_BYTES)
        return w.build()

    @classmethod
    def from_bytes(cls, data: bytes) -> UnmaskResponse:
        r = _reader(data, cls.KIND)
        tag, sender = r.fixed(AGGREGATION_TAG_BYTES), r.text()
        self_mask = tuple((r.text(), r.fixed(SHARE_BYTES)) for _ in range(r.count()))
        mask_key = tuple((r.text(), r.fixed(SHARE_BYTES)) for _ in range(r.count()))
        r.finish()
        return cls(tag, sender, self_mask, mask_key)


ClientMessage = AdvertiseKeys | ShareKeys | MaskedInput | UnmaskResponse
ServerMessage = Roster | ShareBundle | UnmaskRequest
Message = ClientMessage | ServerMessage
MESSAGE_TYPES: dict[int, type[Message]] = {
    t.KIND: t for t in (AdvertiseKeys, Roster, ShareKeys, ShareBundle, MaskedInput, UnmaskRequest, UnmaskResponse)
}


def decode_message(data: bytes) -> Message:
    """Any protocol message, its type read from the header (for a transport that does not know what comes next)."""
    if len(data) < len(MAGIC) + 2 or data[: len(MAGIC)] != MAGIC:
        raise SecAggError(f"not a secure-aggregation message (no {MAGIC!r} header)")
    kind = data[len(MAGIC) + 1]
    if kind not in MESSAGE_TYPES:
        raise SecAggError(f"unknown message kind {kind}; expected one of {sorted(MESSAGE_TYPES)}")
    return MESSAGE_TYPES[kind].from_bytes(data)


def masked_input_bytes(sender: str, length: int, ring_bits: int) -> int:
    """The size of `sender`'s masked input of `length` values: it does not depend on the values or the masks."""
    ring = Ring(ring_bits)
    return len(MaskedInput(bytes(AGGREGATION_TAG_BYTES), sender, ring_bits, ring.zeros(length)).to_bytes())
