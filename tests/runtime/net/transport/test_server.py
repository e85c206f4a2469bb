"""NetServer end to end on loopback: round trips, authentication, the replay guard, message checks,
handler errors, hostile bytes on the socket and stalled senders."""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from fleettune.errors import InputError
from fleettune.runtime.net.transport import (
    AuthError,
    Message,
    NetClient,
    NetInputError,
    NetServer,
    OpenAuth,
    RemoteError,
    ServerTLS,
    TokenAuth,
)
from fleettune.runtime.net.transport.fleet_pb2 import Chunk, Header
from tests.runtime.net.transport.conftest import TOKENS, Echo, raw_call

Serve = Callable[..., NetServer]
Connect = Callable[..., NetClient]


def _chunks(payload: bytes, seq: int = 100, device: str = "d1", kind: str = "put", split: int = 0) -> list[Chunk]:
    """An honest message as hand-made chunks (two data chunks when `split`)."""
    header = Header(kind=kind, device=device, seq=seq, size=len(payload))
    digest = hashlib.sha256(payload).digest()
    if not split:
        return [Chunk(header=header, data=payload, sha256=digest)]
    return [Chunk(header=header, data=payload[:split]), Chunk(data=payload[split:], sha256=digest)]


def test_small_payload_and_fields_round_trip(serve: Serve, connect: Connect, echo: Echo) -> None:
    client = connect(serve(echo))
    reply = client.call("join", {"samples": "12", "note": "ünïcode ok"}, b"\x00\x01binary\xff")
    assert reply.kind == "echo_join" and reply.device == "d1"
    assert reply.fields == {"samples": "12", "note": "ünïcode ok", "identity": "d1"}
    assert reply.payload == b"\x00\x01binary\xff"
    assert reply.seq == echo.calls[0][1].seq


def test_empty_payload_and_no_fields_round_trip(serve: Serve, connect: Connect, echo: Echo) -> None:
    client = connect(serve(echo))
    reply = client.call("poll")
    assert reply.payload == b"" and reply.fields == {"identity": "d1"}
    assert echo.calls[0][1].payload == b"" and echo.calls[0][1].fields == {}


def test_payload_over_64_mib_round_trips_with_under_5_percent_wire_overhead(
    serve: Serve, connect: Connect, echo: Echo
) -> None:
    server = serve(echo)
    client = connect(server)
    payload = hashlib.sha256(b"seed").digest() * ((65 << 20) // 32 + 7)  # just over 65 MiB, not all zeros
    reply = client.call("activations", payload=payload)
    assert len(reply.payload) == len(payload) and reply.payload == payload
    for stats in (client.stats.snapshot(), server.stats.snapshot()):
        for wire, carried in ((stats.sent, stats.payload_sent), (stats.received, stats.payload_received)):
            assert carried["d1"] == len(payload)
            assert len(payload) < wire["d1"] < len(payload) * 1.05
    assert client.stats.sent == server.stats.received and client.stats.received == server.stats.sent


def test_wrong_token_and_unknown_device_are_unauthenticated_and_logged(
    serve: Serve, connect: Connect, echo: Echo, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(echo)
    caplog.set_level(logging.WARNING, logger="fleettune.net")
    for device, token in (
        ("d1", "a-wrong-token-for-d1-0000"),
        ("d9", "a-token-for-nobody-00000"),
        ("d2", TOKENS["d1"]),
    ):
        with pytest.raises(RemoteError) as caught:
            connect(server, device, token=token).call("join")
        assert caught.value.code is grpc.StatusCode.UNAUTHENTICATED and "UNAUTHENTICATED" in str(caught.value)
        assert any(device in r.getMessage() and "UNAUTHENTICATED" in r.getMessage() for r in caplog.records)
    assert connect(server, "d2").call("join").fields["identity"] == "d2"
    assert [identity for identity, _ in echo.calls] == ["d2"]


def test_a_device_cannot_submit_for_another(serve: Serve, echo: Echo) -> None:
    server = serve(echo)
    code, details, _ = raw_call(server.port, _chunks(b"x", device="d2"), device="d1")
    assert code is grpc.StatusCode.PERMISSION_DENIED and details == "device d1 cannot submit for d2"
    assert echo.calls == []


def test_replayed_or_out_of_order_seq_is_rejected(serve: Serve, echo: Echo) -> None:
    server = serve(echo)
    assert raw_call(server.port, _chunks(b"first", seq=10))[0] is grpc.StatusCode.OK
    for chunks in (_chunks(b"older", seq=9), _chunks(b"same seq, other bytes", seq=10)):
        code, details, _ = raw_call(server.port, chunks)
        assert code is grpc.StatusCode.FAILED_PRECONDITION and "replayed or out-of-order" in details
    assert raw_call(server.port, _chunks(b"next", seq=11))[0] is grpc.StatusCode.OK
    assert [request.payload for _, request in echo.calls] == [b"first", b"next"]


def test_seq_is_tracked_per_device(serve: Serve, echo: Echo) -> None:
    server = serve(echo)
    assert raw_call(server.port, _chunks(b"a", seq=50, device="d1"), device="d1")[0] is grpc.StatusCode.OK
    assert raw_call(server.port, _chunks(b"b", seq=5, device="d2"), device="d2")[0] is grpc.StatusCode.OK


def test_exact_retry_gets_the_kept_reply_without_running_the_handler_again(serve: Serve, echo: Echo) -> None:
    server = serve(echo)
    first = raw_call(server.port, _chunks(b"payload", seq=7, split=3))
    again = raw_call(server.port, _chunks(b"payload", seq=7))  # chunked differently: same message
    assert first[0] is again[0] is grpc.StatusCode.OK and first[2] == again[2]
    assert len(echo.calls) == 1


def test_a_retry_during_handling_waits_for_the_first_result(serve: Serve) -> None:
    release, started = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow(identity: str, request: Message) -> Message:
        calls.append(request.seq)
        started.set()
        release.wait(10)
        return Message("done", identity, request.seq, {"n": str(len(calls))})

    server = serve(slow)
    results: list[tuple[grpc.StatusCode, str, list[Chunk]]] = []
    threads = [threading.Thread(target=lambda: results.append(raw_call(server.port, _chunks(b"x", seq=3))))]
    threads[0].start()
    assert started.wait(10)
    threads.append(threading.Thread(target=lambda: results.append(raw_call(server.port, _chunks(b"x", seq=3)))))
    threads[1].start()
    time.sleep(0.2)  # the retry is now waiting on the first copy
    release.set()
    for thread in threads:
        thread.join(10)
    assert [r[0] for r in results] == [grpc.StatusCode.OK] * 2 and results[0][2] == results[1][2]
    assert calls == [3]


def test_checksum_mismatch_is_rejected(serve: Serve, echo: Echo) -> None:
    server = serve(echo)
    wrong_digest = _chunks(b"payload")
    wrong_digest[0].sha256 = hashlib.sha256(b"other").digest()
    flipped = _chunks(b"payload", split=3)
    flipped[1].data = b"LOAD"
    for chunks in (wrong_digest, flipped):
        code, details, _ = raw_call(server.port, chunks)
        assert code is grpc.StatusCode.INVALID_ARGUMENT and details.startswith("checksum mismatch")
    assert echo.calls == []


def test_truncated_payload_is_rejected(serve: Serve, echo: Echo) -> None:
    server = serve(echo)
    declared_more = _chunks(b"0123456789")
    declared_more[0].header.size = 20
    stream_ends_early = _chunks(b"0123456789", split=5)[:1]
    for chunks in (declared_more, stream_ends_early):
        code, details, _ = raw_call(server.port, chunks)
        assert code is grpc.StatusCode.INVALID_ARGUMENT and details.startswith("truncated message")
    assert echo.calls == []


def test_oversized_declared_size_and_oversized_chunk_are_refused(serve: Serve, echo: Echo) -> None:
    server = serve(echo, max_message_bytes=4096, chunk_bytes=4096)
    big_claim = [Chunk(header=Header(kind="put", device="d1", seq=1, size=4097), data=b"x")]
    code, details, _ = raw_call(server.port, big_claim)
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and "exceeds the limit of 4096 bytes" in details
    code, _, _ = raw_call(server.port, _chunks(bytes(200_000)))  # one chunk far above the server's chunk size
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert echo.calls == []


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([Chunk(data=b"x")], "the first chunk carries no header"),
        ([*_chunks(b"ab", split=1)[:1], Chunk(header=Header(kind="put", device="d1", seq=100), data=b"b")], "repeats"),
        (_chunks(b"x", kind="Bad-Kind"), "does not match"),
        ([], "before any chunk"),
    ],
)
def test_malformed_chunk_sequences_are_invalid(serve: Serve, echo: Echo, chunks: list[Chunk], expected: str) -> None:
    code, details, _ = raw_call(serve(echo).port, chunks)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and expected in details


def test_handler_errors_map_to_status_codes_and_the_server_keeps_serving(
    serve: Serve, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    def picky(identity: str, request: Message) -> Message:
        if request.kind == "bad":
            raise InputError("field 'round' must be an integer,\n got 'x'")
        if request.kind == "forbidden":
            raise PermissionError("d1 may not upload now")
        if request.kind == "broken":
            raise RuntimeError("bug in the handler")
        return Message("ok", identity, request.seq)

    client = connect(serve(picky))
    caplog.set_level(logging.WARNING, logger="fleettune.net")
    with pytest.raises(RemoteError) as caught:
        client.call("bad")
    assert isinstance(caught.value, InputError) and caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert str(caught.value) == (f"INVALID_ARGUMENT from {client.address}: field 'round' must be an integer, got 'x'")
    with pytest.raises(RemoteError, match=r"PERMISSION_DENIED.*d1 may not upload now"):
        client.call("forbidden")
    with pytest.raises(RemoteError, match="INTERNAL") as caught:
        client.call("broken")
    assert "bug in the handler" not in str(caught.value)
    assert any(r.exc_info and "bug in the handler" in str(r.exc_info[1]) for r in caplog.records)
    assert client.call("fine").kind == "ok"


def test_garbage_and_truncated_http2_frames_do_not_stop_the_server(serve: Serve, connect: Connect, echo: Echo) -> None:
    server = serve(echo)
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    hostile = [
        bytes(range(256)) * 64,  # random-looking garbage instead of a preface
        preface + b"\x00\x00\x12\x04\x00\x00\x00\x00\x00\x00\x03",  # a SETTINGS frame cut short
        preface + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00" + b"\x00\x10\x01\x04\x00\x00\x00\x01\x83\x86",  # HEADERS cut
        preface + b"\xff\xff\xff\x00\x00\x00\x00\x00\x01",  # a frame declaring 16 MiB, then nothing
    ]
    for data in hostile:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            raw.sendall(data)
            time.sleep(0.05)
    assert connect(server).call("join", payload=b"still here").payload == b"still here"


def test_a_stalled_request_stream_is_aborted_but_a_slow_handler_is_not(serve: Serve, connect: Connect) -> None:
    def long_poll(identity: str, request: Message) -> Message:
        time.sleep(0.8)  # longer than the idle timeout: the handler's own business
        return Message("instruction", identity, request.seq)

    server = serve(long_poll, idle_timeout_s=0.5)
    gate = threading.Event()

    def stalls_midway() -> Iterator[Chunk]:
        yield Chunk(header=Header(kind="put", device="d1", seq=1, size=10), data=b"12345")
        gate.wait(10)  # then nothing, like a slowloris client

    def sends_nothing() -> Iterator[Chunk]:
        gate.wait(10)
        yield from ()

    for stalling in (stalls_midway, sends_nothing):
        started = time.monotonic()
        code, details, _ = raw_call(server.port, stalling())
        assert code is grpc.StatusCode.DEADLINE_EXCEEDED and "stalled" in details
        assert time.monotonic() - started < 5
    gate.set()
    # The threads that were reading the stalled streams are gone too.
    deadline = time.monotonic() + 5
    while any(t.name == "fleettune-net-read" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "fleettune-net-read" for t in threading.enumerate())
    assert connect(server).call("poll").kind == "instruction"


def test_non_loopback_listen_without_tls_needs_insecure(echo: Echo) -> None:
    tokens = TokenAuth.from_pairs(TOKENS)
    with pytest.raises(NetInputError, match=r"listen 0\.0\.0\.0:7800: .*needs --tls-cert/--tls-key or --insecure"):
        NetServer(echo, listen="0.0.0.0:7800", auth=tokens)
    NetServer(echo, listen="0.0.0.0:7800", auth=tokens, allow_insecure=True)  # allowed, not started
    NetServer(echo, listen="[::1]:0", auth=OpenAuth())  # loopback needs no TLS


def test_open_auth_is_refused_on_a_non_loopback_address(echo: Echo, cert_dir: Path) -> None:
    tls = ServerTLS(cert_dir / "server.pem", cert_dir / "server.key")
    with pytest.raises(AuthError, match="only a loopback address is allowed"):
        NetServer(echo, listen="0.0.0.0:7800", auth=OpenAuth(), tls=tls)


@pytest.mark.parametrize("listen", ["7800", "host:", "host:99999", "::1:80", "[::1:80", "http://x:80", ""])
def test_a_bad_listen_address_is_an_input_error_naming_the_field(echo: Echo, listen: str) -> None:
    with pytest.raises(NetInputError, match=r"^listen: expected HOST:PORT"):
        NetServer(echo, listen=listen, auth=OpenAuth())


def test_binding_a_port_in_use_is_an_input_error(serve: Serve, echo: Echo) -> None:
    server = serve(echo)
    with pytest.raises(NetInputError, match=rf"listen 127\.0\.0\.1:{server.port}: cannot bind"):
        serve(echo, listen=f"127.0.0.1:{server.port}")


def test_open_auth_believes_the_claimed_device(serve: Serve, connect: Connect, echo: Echo) -> None:
    server = serve(echo, auth=OpenAuth())
    assert connect(server, "anyone", token=None).call("join").fields["identity"] == "anyone"


def test_one_device_cannot_hold_more_than_its_share_of_workers(serve: Serve, connect: Connect) -> None:
    """Streams a device opens and never finishes take its own slots only: its next call is refused at once,
    another device is served, and the slots come back when the streams end."""

    def answer(identity: str, request: Message) -> Message:
        return Message("instruction", identity, request.seq)

    server = serve(answer, workers=4, calls_per_device=2, idle_timeout_s=30.0)
    gate = threading.Event()

    def sends_nothing() -> Iterator[Chunk]:
        gate.wait(20)
        yield from ()

    holders = [threading.Thread(target=raw_call, args=(server.port, sends_nothing()), daemon=True) for _ in range(2)]
    for t in holders:
        t.start()
    deadline = time.monotonic() + 5
    while server._calls.open_calls("d1") < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    code, details, _ = raw_call(server.port, iter(()), timeout_s=5)
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and "d1 already has 2 calls open" in details
    assert connect(server, "d2").call("poll").kind == "instruction"
    gate.set()
    for t in holders:
        t.join(10)
    assert server._calls.open_calls("d1") == 0
    assert connect(server).call("poll").kind == "instruction"
