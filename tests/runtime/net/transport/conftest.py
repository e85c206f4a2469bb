"""Fixtures for transport tests: servers on free loopback ports, a counting echo handler, raw chunk calls."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from fleettune.runtime.net.transport import (
    Authenticator,
    Message,
    NetClient,
    NetServer,
    TokenAuth,
    make_certificates,
)
from fleettune.runtime.net.transport.auth import DEVICE_KEY, TOKEN_KEY
from fleettune.runtime.net.transport.fleet_pb2 import Chunk
from fleettune.runtime.net.transport.wire import METHOD_PATH

TOKENS = {"d1": "token-of-device-1-0123456789", "d2": "token-of-device-2-0123456789"}


class Echo:
    """Replies with the request's kind, fields (plus the identity) and payload; counts its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Message]] = []
        self.lock = threading.Lock()

    def __call__(self, identity: str, request: Message) -> Message:
        with self.lock:
            self.calls.append((identity, request))
        fields = {**request.fields, "identity": identity}
        return Message("echo_" + request.kind, identity, request.seq, fields, request.payload)


@pytest.fixture
def echo() -> Echo:
    return Echo()


@pytest.fixture
def serve() -> Iterator[Callable[..., NetServer]]:
    """Start a NetServer on 127.0.0.1 (a free port) with token auth unless told otherwise; stopped at teardown."""
    servers: list[NetServer] = []

    def start(
        handler: Callable[[str, Message], Message], auth: Authenticator | None = None, **options: Any
    ) -> NetServer:
        options.setdefault("listen", "127.0.0.1:0")
        server = NetServer(handler, auth=auth or TokenAuth.from_pairs(TOKENS), **options)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(0)


@pytest.fixture
def connect() -> Iterator[Callable[..., NetClient]]:
    """A NetClient to a server's port as d1 with its token unless told otherwise; no retries by default."""
    clients: list[NetClient] = []

    def make(server: NetServer, device: str = "d1", **options: Any) -> NetClient:
        options.setdefault("token", TOKENS.get(device))
        options.setdefault("retry_s", 0.0)
        client = NetClient(f"127.0.0.1:{server.port}", device, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def raw_call(
    port: int, chunks: Iterable[Chunk], device: str = "d1", token: str | None = None, timeout_s: float = 20.0
) -> tuple[grpc.StatusCode, str, list[Chunk]]:
    """Send hand-made chunks on the Exchange method; the status code, its details and the reply chunks."""
    metadata = [(DEVICE_KEY, device), (TOKEN_KEY, token if token is not None else TOKENS[device])]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        exchange = channel.stream_stream(
            METHOD_PATH, request_serializer=Chunk.SerializeToString, response_deserializer=Chunk.FromString
        )
        replies = exchange(iter(chunks), metadata=metadata, timeout=timeout_s)
        try:
            received = list(replies)
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or "", []
        return grpc.StatusCode.OK, "", received


@pytest.fixture(scope="session")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Certificates for localhost and two devices, made once for the whole test run."""
    out = tmp_path_factory.mktemp("certs")
    make_certificates(out, ["localhost"], ["d1", "d2"], days=2)
    return out
