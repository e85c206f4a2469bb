"""Chunking and reassembly: chunk sizes, the header on the first chunk only, the checksum on the last."""

from __future__ import annotations

import grpc
import pytest

from fleettune.runtime.net.transport import Message, NetInputError, ProtocolError
from fleettune.runtime.net.transport.fleet_pb2 import Chunk
from fleettune.runtime.net.transport.wire import CHUNK_SLACK, Assembler, chunk_limit, prepare, request_digest


def _rebuild(chunks: list[Chunk], max_bytes: int = 1 << 20) -> Message:
    assembler = Assembler(max_bytes)
    done = [assembler.add(chunk) for chunk in chunks]
    assert done == [False] * (len(chunks) - 1) + [True]
    return assembler.finish()


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 3 * 4096])
def test_a_message_splits_into_chunk_sized_pieces_and_rebuilds(size: int) -> None:
    message = Message("put", "d1", 7, {"a": "1"}, bytes(range(256)) * (size // 256) + bytes(size % 256))
    chunks = list(prepare(message).chunks(4096))
    assert len(chunks) == max(1, -(-size // 4096))
    assert [c.HasField("header") for c in chunks] == [True] + [False] * (len(chunks) - 1)
    assert [bool(c.sha256) for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert all(len(c.data) <= 4096 and c.ByteSize() <= chunk_limit(4096) for c in chunks)
    assert _rebuild(chunks) == message


def test_a_retry_yields_identical_chunks_and_the_digest_covers_the_header() -> None:
    outgoing = prepare(Message("put", "d1", 7, {"b": "2", "a": "1"}, b"xyz"))
    assert list(outgoing.chunks(1024)) == list(outgoing.chunks(1024))
    other_fields = prepare(Message("put", "d1", 7, {"a": "1", "b": "3"}, b"xyz"))
    same_fields = prepare(Message("put", "d1", 7, {"a": "1", "b": "2"}, b"xyz"))
    digest = request_digest(outgoing.header, outgoing.sha256)
    assert digest == request_digest(same_fields.header, same_fields.sha256)
    assert digest != request_digest(other_fields.header, other_fields.sha256)


def test_more_data_than_declared_is_refused_before_it_is_kept() -> None:
    chunks = list(prepare(Message("put", "d1", 1, {}, b"12345678")).chunks(1024))
    chunks[0].header.size = 4
    with pytest.raises(ProtocolError, match="more payload than the declared 4 bytes") as caught:
        _rebuild(chunks)
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT


def test_a_chunk_after_the_final_one_is_refused() -> None:
    chunks = list(prepare(Message("put", "d1", 1, {}, b"1")).chunks(1024))
    assembler = Assembler(100)
    assert assembler.add(chunks[0])
    with pytest.raises(ProtocolError, match="after the message's final"):
        assembler.add(Chunk(data=b"2"))


def test_the_header_hook_sees_the_header_before_any_payload_is_kept() -> None:
    def refuse(header: object) -> None:
        raise ProtocolError(grpc.StatusCode.PERMISSION_DENIED, "no")

    assembler = Assembler(100, on_header=refuse)
    with pytest.raises(ProtocolError, match="no"):
        assembler.add(next(prepare(Message("put", "d1", 1, {}, b"data")).chunks(1024)))
    assert assembler.received == 0


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (Message("put", "d1", -1), "^seq: expected an integer"),
        (Message("put", "d1", 1 << 64), "^seq: expected an integer"),
        (Message("put", "", 1), "^device: expected a device id"),
        (Message("9put", "d1", 1), "^kind: expected a short name"),
        (Message("put", "d1", 1, {"k": "v" * CHUNK_SLACK}), "at most 65536 fit in a header"),
    ],
)
def test_prepare_refuses_what_the_wire_cannot_carry(message: Message, expected: str) -> None:
    with pytest.raises(NetInputError, match=expected):
        prepare(message)
