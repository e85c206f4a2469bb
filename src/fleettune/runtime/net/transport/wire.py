"""A message as a stream of chunks: splitting it on send, and checking and rebuilding it on receive."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc

from fleettune.runtime.net.transport.errors import NetInputError, ProtocolError
from fleettune.runtime.net.transport.fleet_pb2 import Chunk, Header
from fleettune.runtime.net.transport.message import DEVICE_ID, KIND, Message, check_device_id, check_fields, check_kind

SERVICE = "fleettune.net.Fleet"
METHOD = "Exchange"
METHOD_PATH = f"/{SERVICE}/{METHOD}"

# Kind, device, seq and fields ride on the first chunk; fields are small metadata, bulk data is the payload.
MAX_HEADER_BYTES = 64 << 10
# What a chunk may carry above its data: the header, the checksum and protobuf tags.
CHUNK_SLACK = MAX_HEADER_BYTES + 1024
MIN_CHUNK_BYTES = 1 << 10
MAX_CHUNK_BYTES = 64 << 20
SHA256_BYTES = 32


def chunk_limit(chunk_bytes: int) -> int:
    """The largest serialized chunk an endpoint with this chunk size sends: its gRPC message limit."""
    return chunk_bytes + CHUNK_SLACK


def check_chunk_bytes(chunk_bytes: int) -> int:
    if not isinstance(chunk_bytes, int) or not MIN_CHUNK_BYTES <= chunk_bytes <= MAX_CHUNK_BYTES:
        raise NetInputError(
            f"chunk_bytes: expected an integer from {MIN_CHUNK_BYTES} to {MAX_CHUNK_BYTES}, got {chunk_bytes!r}"
        )
    return chunk_bytes


@dataclass(frozen=True)
class Outgoing:
    """A message checked and ready to stream; sending it again (a retry) yields identical chunks."""

    header: Header
    payload: bytes
    sha256: bytes

    def chunks(self, chunk_bytes: int) -> Iterator[Chunk]:
        total = len(self.payload)
        if total == 0:
            yield Chunk(header=self.header, sha256=self.sha256)
            return
        for start in range(0, total, chunk_bytes):
            end = min(start + chunk_bytes, total)
            chunk = Chunk(data=self.payload[start:end])
            if start == 0:
                chunk.header.CopyFrom(self.header)
            if end == total:
                chunk.sha256 = self.sha256
            yield chunk


def prepare(message: Message) -> Outgoing:
    """Check a message against the protocol's rules and digest its payload once."""
    check_kind(message.kind)
    check_device_id(message.device)
    if not isinstance(message.seq, int) or not 0 <= message.seq < 1 << 64:
        raise NetInputError(f"seq: expected an integer from 0 to 2**64 - 1, got {message.seq!r}")
    payload = bytes(message.payload)
    header = Header(
        kind=message.kind,
        device=message.device,
        seq=message.seq,
        fields=check_fields(message.fields),
        size=len(payload),
    )
    if header.ByteSize() > MAX_HEADER_BYTES:
        raise NetInputError(
            f"fields of a {message.kind!r} message take {header.ByteSize()} bytes; at most {MAX_HEADER_BYTES} "
            "fit in a header (send bulk data as the payload)"
        )
    return Outgoing(header, payload, hashlib.sha256(payload).digest())


def request_digest(header: Header, payload_sha256: bytes) -> bytes:
    """What makes two requests the same request: kind, device, seq, fields, size and payload."""
    return hashlib.sha256(header.SerializeToString(deterministic=True) + payload_sha256).digest()


def _invalid(message: str) -> ProtocolError:
    return ProtocolError(grpc.StatusCode.INVALID_ARGUMENT, message)


class Assembler:
    """Rebuilds one message from its chunks, checking each chunk as it arrives.

    `on_header` sees the header before any payload is kept, so a receiver can refuse early
    (wrong device, stale seq) without buffering what follows.
    """

    def __init__(self, max_bytes: int, on_header: Callable[[Header], None] | None = None) -> None:
        self.max_bytes = max_bytes
        self.on_header = on_header
        self.header: Header | None = None
        self.message: Message | None = None
        self.payload_sha256 = b""
        self.received = 0
        self._parts: list[bytes] = []
        self._hash = hashlib.sha256()
        self._chunks = 0

    def add(self, chunk: Chunk) -> bool:
        """Take the next chunk; True once it completed the message."""
        if self.message is not None:
            raise _invalid("a chunk arrived after the message's final (checksum) chunk")
        index = self._chunks
        self._chunks += 1
        if index == 0:
            if not chunk.HasField("header"):
                raise _invalid("the first chunk carries no header")
            self._start(chunk.header)
        elif chunk.HasField("header"):
            raise _invalid(f"chunk {index} repeats the header (only the first chunk carries one)")
        assert self.header is not None
        data = chunk.data
        if data:
            if self.received + len(data) > self.header.size:
                raise _invalid(f"more payload than the declared {self.header.size} bytes")
            self._parts.append(data)
            self._hash.update(data)
            self.received += len(data)
        if not chunk.sha256:
            return False
        if self.received != self.header.size:
            raise _invalid(f"truncated message: {self.received} of {self.header.size} declared payload bytes")
        digest = self._hash.digest()
        if not hmac.compare_digest(chunk.sha256, digest):
            raise _invalid(f"checksum mismatch: the {self.received}-byte payload does not match its SHA-256")
        header = self.header
        self.payload_sha256 = digest
        self.message = Message(header.kind, header.device, header.seq, dict(header.fields), b"".join(self._parts))
        self._parts = []
        return True

    def finish(self) -> Message:
        """The stream ended: the complete message, or why it is incomplete."""
        if self.message is not None:
            return self.message
        if self.header is None:
            raise _invalid("truncated message: the stream ended before any chunk")
        raise _invalid(
            f"truncated message: the stream ended after {self.received} of {self.header.size} declared payload "
            "bytes, without the final checksum chunk"
        )

    def _start(self, header: Header) -> None:
        if not KIND.fullmatch(header.kind):
            raise _invalid(f"kind {header.kind[:80]!r} does not match [a-z][a-z0-9_]*")
        if not DEVICE_ID.fullmatch(header.device):
            raise _invalid(f"device {header.device[:80]!r} is not a valid device id")
        if header.size > self.max_bytes:
            raise ProtocolError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"declared payload of {header.size} bytes exceeds the limit of {self.max_bytes} bytes",
            )
        self.header = header
        if self.on_header is not None:
            self.on_header(header)
