"""A device's end of the transport: numbered, retried request/reply calls to the edge server."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Mapping

import grpc

from fleettune.runtime.net.transport.address import is_loopback, parse_address
from fleettune.runtime.net.transport.auth import DEVICE_KEY, TOKEN_KEY
from fleettune.runtime.net.transport.errors import NetInputError, ProtocolError, RemoteError
from fleettune.runtime.net.transport.fleet_pb2 import Chunk
from fleettune.runtime.net.transport.message import Message, check_device_id
from fleettune.runtime.net.transport.stats import WireStats
from fleettune.runtime.net.transport.tls import ClientTLS
from fleettune.runtime.net.transport.wire import (
    METHOD_PATH,
    Assembler,
    Outgoing,
    check_chunk_bytes,
    chunk_limit,
    prepare,
)

log = logging.getLogger("fleettune.net")

# Codes after which the same request may simply be sent again: the server was unreachable or the
# connection dropped. The server recognises a resent request by its seq and digest.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})
# A server may use bigger chunks than its devices: accept replies chunked up to this.
MAX_REPLY_CHUNK_BYTES = 16 << 20
FIRST_BACKOFF_S = 0.1
MAX_BACKOFF_S = 2.0


class NetClient:
    """Calls the server at `address` as `device`; one call at a time (concurrent callers queue in order).

    Sequence numbers start from the wall clock in nanoseconds, so a restarted device never reuses one.
    On UNAVAILABLE (server down, connection lost) a call is resent with the same seq, with backoff, for up
    to `retry_s` seconds after the first failure. Without `tls`, only loopback addresses are allowed unless
    `allow_insecure`.
    """

    def __init__(
        self,
        address: str,
        device: str,
        *,
        token: str | None = None,
        tls: ClientTLS | None = None,
        chunk_bytes: int = 1 << 20,
        retry_s: float = 30.0,
        allow_insecure: bool = False,
        max_message_bytes: int = 1 << 32,
    ) -> None:
        host, _ = parse_address(address, "server")
        self.address = address
        self.device = check_device_id(device, "device")
        if tls is None and not allow_insecure and not is_loopback(host):
            raise NetInputError(
                f"server {address}: a non-loopback server needs --tls-ca or --insecure "
                "(without TLS, the token and payloads cross the network in the clear)"
            )
        if token is not None and not all(33 <= ord(c) <= 126 for c in token):
            raise NetInputError("token: expected printable ASCII without spaces")
        if not retry_s >= 0:
            raise NetInputError(f"retry_s: expected a number of seconds >= 0, got {retry_s!r}")
        if not isinstance(max_message_bytes, int) or max_message_bytes < 0:
            raise NetInputError(f"max_message_bytes: expected an integer >= 0, got {max_message_bytes!r}")
        self.chunk_bytes = check_chunk_bytes(chunk_bytes)
        self.retry_s = float(retry_s)
        self.max_message_bytes = max_message_bytes
        self.stats = WireStats()
        options: list[tuple[str, int | str]] = [
            ("grpc.max_send_message_length", chunk_limit(self.chunk_bytes)),
            ("grpc.max_receive_message_length", chunk_limit(max(self.chunk_bytes, MAX_REPLY_CHUNK_BYTES))),
            # Keep long polls alive through NATs and notice a dead server; the server accepts these pings.
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.max_pings_without_data", 0),
            # gRPC's own reconnect backoff grows to minutes; our retry loop wants a fresh attempt each time.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", int(MAX_BACKOFF_S * 1000)),
        ]
        if tls is not None:
            if tls.server_name:
                options.append(("grpc.ssl_target_name_override", tls.server_name))
            self._channel = grpc.secure_channel(address, tls.credentials(), options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._exchange = self._channel.stream_stream(
            METHOD_PATH, request_serializer=self._serialize, response_deserializer=self._deserialize
        )
        metadata = [(DEVICE_KEY, self.device)]
        if token is not None:
            metadata.append((TOKEN_KEY, token))
        self._metadata = tuple(metadata)
        self._lock = threading.Lock()
        self._seq = time.time_ns()

    def call(
        self, kind: str, fields: Mapping[str, str] | None = None, payload: bytes = b"", timeout_s: float | None = None
    ) -> Message:
        """Send one request and return the server's reply; `timeout_s` bounds each attempt.

        Raises RemoteError for an error status (after retries for UNAVAILABLE) or a malformed reply
        (DATA_LOSS), and NetInputError, before sending, for a request the wire cannot carry.
        """
        with self._lock:
            self._seq += 1
            outgoing = prepare(Message(kind, self.device, self._seq, dict(fields or {}), payload))
            return self._call_with_retry(outgoing, timeout_s)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> NetClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call_with_retry(self, outgoing: Outgoing, timeout_s: float | None) -> Message:
        give_up_at: float | None = None
        backoff = FIRST_BACKOFF_S
        while True:
            try:
                return self._attempt(outgoing, timeout_s)
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details() or ""
            now = time.monotonic()
            if give_up_at is None:
                give_up_at = now + self.retry_s
            if code not in RETRYABLE or now >= give_up_at:
                if code in RETRYABLE and self.retry_s > 0:
                    details = f"{details} (gave up after retrying for {self.retry_s:g} s)"
                raise RemoteError(code, details, address=self.address) from None
            pause = min(backoff * random.uniform(0.5, 1.0), give_up_at - now)
            log.info(
                "%s seq %d: %s %s; retrying in %.2f s",
                outgoing.header.kind,
                outgoing.header.seq,
                code.name,
                details,
                pause,
            )
            time.sleep(pause)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _attempt(self, outgoing: Outgoing, timeout_s: float | None) -> Message:
        responses = self._exchange(outgoing.chunks(self.chunk_bytes), metadata=self._metadata, timeout=timeout_s)
        assembler = Assembler(self.max_message_bytes)
        try:
            # Read to the end of the stream (not just the final chunk) so the call's status is consumed too.
            for chunk in responses:
                assembler.add(chunk)
            reply = assembler.finish()
        except ProtocolError as exc:
            responses.cancel()
            raise RemoteError(grpc.StatusCode.DATA_LOSS, f"malformed reply: {exc}", address=self.address) from None
        header = outgoing.header
        if reply.device != self.device or reply.seq != header.seq:
            raise RemoteError(
                grpc.StatusCode.INTERNAL,
                f"the reply is for device {reply.device} seq {reply.seq}, not {self.device} seq {header.seq}",
                address=self.address,
            )
        return reply

    def _serialize(self, chunk: Chunk) -> bytes:
        data = chunk.SerializeToString()
        self.stats.add_sent(self.device, len(data), len(chunk.data))
        return data

    def _deserialize(self, raw: bytes) -> Chunk:
        chunk = Chunk.FromString(raw)
        self.stats.add_received(self.device, len(raw), len(chunk.data))
        return chunk
