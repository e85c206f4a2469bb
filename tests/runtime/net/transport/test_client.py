"""NetClient: sequence numbers, retries that keep their seq, one-line errors, and checks on what it sends
and receives."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from fleettune.errors import InputError
from fleettune.runtime.net.transport import (
    Message,
    NetClient,
    NetInputError,
    NetServer,
    RemoteError,
    TokenAuth,
)
from fleettune.runtime.net.transport.fleet_pb2 import Chunk, Header
from fleettune.runtime.net.transport.wire import METHOD, SERVICE
from tests.runtime.net.transport.conftest import TOKENS, Echo

Serve = Callable[..., NetServer]
Connect = Callable[..., NetClient]
_EMPTY = hashlib.sha256(b"").digest()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_seq_starts_from_the_wall_clock_and_grows_by_one(serve: Serve, connect: Connect, echo: Echo) -> None:
    before = time.time_ns()
    client = connect(serve(echo))
    seqs = [client.call("poll").seq for _ in range(3)]
    assert before < seqs[0] <= time.time_ns() + 1 and seqs == [seqs[0], seqs[0] + 1, seqs[0] + 2]
    assert [request.seq for _, request in echo.calls] == seqs


def test_a_call_retries_with_the_same_seq_until_the_server_is_back(echo: Echo) -> None:
    port = _free_port()
    client = NetClient(f"127.0.0.1:{port}", "d1", token=TOKENS["d1"], retry_s=20.0)
    server = NetServer(echo, listen=f"127.0.0.1:{port}", auth=TokenAuth.from_pairs(TOKENS))
    timer = threading.Timer(0.5, server.start)  # the server comes up while the client is retrying
    timer.start()
    try:
        reply = client.call("join", payload=b"hello")
        # A second server life must not see a stale seq either: the next call continues the same numbering.
        server.stop(0)
        server = NetServer(echo, listen=f"127.0.0.1:{port}", auth=TokenAuth.from_pairs(TOKENS))
        server.start()
        assert client.call("poll").seq == reply.seq + 1
    finally:
        timer.join()
        server.stop(0)
        client.close()
    assert reply.payload == b"hello" and len(echo.calls) == 2


def test_a_call_lost_with_its_server_is_resent_with_the_same_seq(echo: Echo) -> None:
    port = _free_port()
    started, seen = threading.Event(), []

    def stuck(identity: str, request: Message) -> Message:
        seen.append(request.seq)
        started.set()
        time.sleep(2)
        return Message("late", identity, request.seq)

    first = NetServer(stuck, listen=f"127.0.0.1:{port}", auth=TokenAuth.from_pairs(TOKENS))
    first.start()
    client = NetClient(f"127.0.0.1:{port}", "d1", token=TOKENS["d1"], retry_s=20.0)
    second = NetServer(echo, listen=f"127.0.0.1:{port}", auth=TokenAuth.from_pairs(TOKENS))
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.call, "activations", None, b"tensor")
        assert started.wait(10)
        first.stop(0)  # the connection drops mid call
        second.start()
        reply = pending.result(20)
    second.stop(0)
    client.close()
    assert reply.kind == "echo_activations" and reply.payload == b"tensor"
    assert [request.seq for _, request in echo.calls] == seen == [reply.seq]


def test_giving_up_is_a_one_line_unavailable_remote_error() -> None:
    client = NetClient(f"127.0.0.1:{_free_port()}", "d1", retry_s=0.3)
    started = time.monotonic()
    with pytest.raises(RemoteError) as caught:
        client.call("join")
    client.close()
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE and isinstance(caught.value, InputError)
    assert str(caught.value).startswith("UNAVAILABLE from 127.0.0.1:") and "\n" not in str(caught.value)
    assert "gave up after retrying for 0.3 s" in str(caught.value)
    assert time.monotonic() - started < 5


def test_concurrent_callers_are_served_one_at_a_time_in_seq_order(serve: Serve, connect: Connect, echo: Echo) -> None:
    client = connect(serve(echo))
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda i: client.call("put", {"i": str(i)}), range(12)))
    assert sorted(r.seq for r in replies) == [r.seq for _, r in echo.calls]
    assert len({r.seq for r in replies}) == 12


@pytest.mark.parametrize(
    ("kind", "fields", "expected"),
    [
        ("Join", {}, "kind: expected a short name"),
        ("join", {"big": "x" * (70 << 10)}, "at most 65536 fit in a header"),
        ("join", {"n": 3}, "fields: keys and values must be strings"),
    ],
)
def test_a_bad_request_is_an_input_error_before_anything_is_sent(
    serve: Serve, connect: Connect, echo: Echo, kind: str, fields: dict, expected: str
) -> None:
    client = connect(serve(echo))
    with pytest.raises(NetInputError, match=expected):
        client.call(kind, fields)
    assert echo.calls == [] and client.stats.sent == {}


def test_a_non_loopback_server_needs_tls_or_insecure() -> None:
    with pytest.raises(NetInputError, match=r"server 192\.0\.2\.1:7800: .*needs --tls-ca or --insecure"):
        NetClient("192.0.2.1:7800", "d1")
    NetClient("192.0.2.1:7800", "d1", allow_insecure=True).close()
    with pytest.raises(NetInputError, match=r"^device: expected a device id"):
        NetClient("127.0.0.1:7800", "d 1")
    with pytest.raises(NetInputError, match=r"^server: expected HOST:PORT"):
        NetClient("localhost", "d1")


def _fake_server(replies: Callable[[Message], list[Chunk]]) -> tuple[grpc.Server, int]:
    """A server speaking the wire format without NetServer's care, to hand a client malformed replies."""

    def exchange(requests: Iterator[Chunk], context: grpc.ServicerContext) -> Iterator[Chunk]:
        first = next(iter(requests))
        yield from replies(Message(first.header.kind, first.header.device, first.header.seq))

    method = grpc.stream_stream_rpc_method_handler(
        exchange, request_deserializer=Chunk.FromString, response_serializer=Chunk.SerializeToString
    )
    server = grpc.server(
        ThreadPoolExecutor(2), handlers=[grpc.method_handlers_generic_handler(SERVICE, {METHOD: method})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@pytest.mark.parametrize(
    ("replies", "expected"),
    [
        (lambda r: [Chunk(header=Header(kind="ok", device="d1", seq=r.seq, size=2), data=b"ab", sha256=b"0" * 32)],
         "checksum mismatch"),
        (lambda r: [Chunk(header=Header(kind="ok", device="d1", seq=r.seq, size=9), data=b"ab")], "truncated"),
        (lambda r: [Chunk(header=Header(kind="ok", device="d2", seq=r.seq), sha256=_EMPTY)], "is for device d2"),
        (lambda r: [Chunk(header=Header(kind="ok", device="d1", seq=r.seq - 1), sha256=_EMPTY)], "d1 seq"),
    ],
)  # fmt: skip
def test_a_malformed_reply_is_a_remote_error(replies: Callable[[Message], list[Chunk]], expected: str) -> None:
    server, port = _fake_server(replies)
    try:
        with NetClient(f"127.0.0.1:{port}", "d1") as client, pytest.raises(RemoteError, match=expected) as caught:
            client.call("join")
    finally:
        server.stop(0)
    assert caught.value.code in (grpc.StatusCode.DATA_LOSS, grpc.StatusCode.INTERNAL)
