"""The edge server's end of the transport: authenticates each call, checks and orders requests, runs the handler."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from typing import Any, NoReturn

import grpc

from fleettune.errors import InputError
from fleettune.runtime.net.transport.address import is_loopback, join_address, parse_address
from fleettune.runtime.net.transport.auth import DEVICE_KEY, Authenticator, MutualTLSAuth, OpenAuth
from fleettune.runtime.net.transport.errors import AuthError, NetInputError, ProtocolError
from fleettune.runtime.net.transport.fleet_pb2 import Chunk, Header
from fleettune.runtime.net.transport.inbound import Inbound
from fleettune.runtime.net.transport.limits import CallLimit
from fleettune.runtime.net.transport.message import Handler, Message
from fleettune.runtime.net.transport.replay import Outcome, ReplayGuard, Slot
from fleettune.runtime.net.transport.stats import WireStats
from fleettune.runtime.net.transport.tls import ServerTLS
from fleettune.runtime.net.transport.wire import (
    METHOD,
    SERVICE,
    Assembler,
    check_chunk_bytes,
    chunk_limit,
    prepare,
    request_digest,
)

log = logging.getLogger("fleettune.net")

MAX_DETAILS = 1000  # characters of an error message sent back to a device
RETRY_POLL_S = 1.0  # how often a retry waiting for its first copy checks that its client is still there


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:MAX_DETAILS] or type(error).__name__


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> NoReturn:
    context.abort(code, details[:MAX_DETAILS])
    raise AssertionError("abort returned")  # pragma: no cover - abort always raises


def _peer_common_name(context: grpc.ServicerContext) -> str | None:
    names = context.auth_context().get("x509_common_name") or []
    return names[0].decode("utf-8", "replace") if names else None


class NetServer:
    """Serves `handler` on `listen` until stopped; each call carries one request and gets one reply.

    TLS is required on every non-loopback address unless `allow_insecure`. `max_message_bytes` bounds a
    request's payload; `idle_timeout_s` bounds how long a request stream may send nothing (the handler
    itself may take as long as it likes, e.g. a long poll). Each call holds one of `workers` threads, and one
    device may hold at most `calls_per_device` of them at once (a device makes one call at a time; a few more
    leave room for retries), so tricklers with a device's credentials cannot starve the others.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        listen: str,
        auth: Authenticator,
        tls: ServerTLS | None = None,
        chunk_bytes: int = 1 << 20,
        max_message_bytes: int = 1 << 32,
        workers: int = 64,
        idle_timeout_s: float = 30.0,
        allow_insecure: bool = False,
        calls_per_device: int = 4,
    ) -> None:
        self.host, self._requested_port = parse_address(listen, "listen")
        if tls is None and not allow_insecure and not is_loopback(self.host):
            raise NetInputError(
                f"listen {listen}: a non-loopback address needs --tls-cert/--tls-key or --insecure "
                "(without TLS, tokens and payloads cross the network in the clear)"
            )
        if isinstance(auth, OpenAuth) and not allow_insecure and not is_loopback(self.host):
            raise AuthError(
                f"listen {listen}: without authentication (any device id a client claims is believed) only a "
                "loopback address is allowed; use --tokens or --client-ca, or --insecure"
            )
        if isinstance(auth, MutualTLSAuth) and (tls is None or tls.client_ca is None):
            raise AuthError("client-ca: identifying devices by certificate needs --client-ca (ServerTLS.client_ca)")
        if not isinstance(max_message_bytes, int) or max_message_bytes < 0:
            raise NetInputError(f"max_message_bytes: expected an integer >= 0, got {max_message_bytes!r}")
        if not isinstance(workers, int) or workers < 1:
            raise NetInputError(f"workers: expected an integer >= 1, got {workers!r}")
        if not idle_timeout_s > 0:
            raise NetInputError(f"idle_timeout_s: expected a number of seconds > 0, got {idle_timeout_s!r}")
        if not isinstance(calls_per_device, int) or calls_per_device < 1:
            raise NetInputError(f"calls_per_device: expected an integer >= 1, got {calls_per_device!r}")
        self._calls = CallLimit(calls_per_device)
        self.listen = listen
        self.chunk_bytes = check_chunk_bytes(chunk_bytes)
        self.max_message_bytes = max_message_bytes
        self.idle_timeout_s = float(idle_timeout_s)
        self.workers = workers
        self.stats = WireStats()
        self.port = 0
        self._handler = handler
        self._auth = auth
        # Read (and check) the certificate files now, so a bad path fails before anything starts.
        self._credentials = tls.credentials() if tls is not None else None
        self._guard = ReplayGuard()
        self._server: Any = None
        self._executor: ThreadPoolExecutor | None = None

    def start(self) -> None:
        if self._server is not None:
            return
        limit = chunk_limit(self.chunk_bytes)
        options = [
            # A chunk larger than ours is refused before it is buffered (RESOURCE_EXHAUSTED).
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            # Without this, a second server could silently share an already-bound port.
            ("grpc.so_reuseport", 0),
            # Connections that open but never finish the handshake are dropped like quiet streams.
            ("grpc.server_handshake_timeout_ms", max(1, int(self.idle_timeout_s * 1000))),
            # Detect devices that vanished mid long poll; accept their own keepalive pings.
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ]
        method = grpc.stream_stream_rpc_method_handler(
            self._exchange, request_deserializer=Chunk.FromString, response_serializer=Chunk.SerializeToString
        )
        executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="fleettune-net")
        server = grpc.server(
            executor, handlers=[grpc.method_handlers_generic_handler(SERVICE, {METHOD: method})], options=options
        )
        address = join_address(self.host, self._requested_port)
        try:
            if self._credentials is not None:
                port = server.add_secure_port(address, self._credentials)
            else:
                port = server.add_insecure_port(address)
        except RuntimeError as exc:
            port, reason = 0, _one_line(exc)
        else:
            reason = "the address is in use or not local to this machine"
        if not port:
            executor.shutdown(wait=False)
            raise NetInputError(f"listen {self.listen}: cannot bind ({reason})")
        server.start()
        self._server, self._executor, self.port = server, executor, port
        log.info("serving on %s (%s)", join_address(self.host, port), "TLS" if self._credentials else "no TLS")

    def stop(self, grace_s: float = 1.0) -> None:
        """Refuse new calls, give running ones `grace_s` to finish, then cancel them."""
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace_s).wait()
        executor, self._executor = self._executor, None
        if executor is not None:
            # Idle workers go now; a handler still running (a stuck long poll) finishes on its own.
            executor.shutdown(wait=False)

    def __enter__(self) -> NetServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _reject(self, context: grpc.ServicerContext, code: grpc.StatusCode, device: str, reason: str) -> NoReturn:
        log.warning("refused device %s (%s): %s %s", device, context.peer(), code.name, reason)
        _abort(context, code, reason)

    def _exchange(self, requests: Iterator[Chunk], context: grpc.ServicerContext) -> Iterator[Chunk]:
        metadata = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
        claimed = metadata.get(DEVICE_KEY, "")[:80] or "(none)"
        identity = self._auth.identify(metadata, _peer_common_name(context))
        if identity is None:
            self._reject(
                context, grpc.StatusCode.UNAUTHENTICATED, claimed, f"unknown device or bad credentials for {claimed!r}"
            )
        if not self._calls.enter(identity):
            self._reject(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                identity,
                f"device {identity} already has {self._calls.per_device} calls open; expected it to finish one first",
            )
        try:
            yield from self._serve(identity, requests, context)
        finally:
            self._calls.leave(identity)

    def _serve(self, identity: str, requests: Iterator[Chunk], context: grpc.ServicerContext) -> Iterator[Chunk]:
        assembler = Assembler(self.max_message_bytes, on_header=partial(self._check_header, identity))
        inbound = Inbound(requests, assembler, partial(self._count_received, identity))
        try:
            request = inbound.receive(self.idle_timeout_s)
        except ProtocolError as exc:
            self._reject(context, exc.code, identity, _one_line(exc))
        except grpc.RpcError as exc:  # the stream broke: the client cancelled or its connection dropped
            log.info("device %s (%s) left mid-request: %s", identity, context.peer(), _one_line(exc))
            _abort(context, grpc.StatusCode.CANCELLED, "the request stream broke")
        except Exception:
            log.exception("reading a request from device %s (%s) failed", identity, context.peer())
            _abort(context, grpc.StatusCode.INTERNAL, "the server failed to read the request (see its log)")
        assert assembler.header is not None
        digest = request_digest(assembler.header, assembler.payload_sha256)
        try:
            slot, new = self._guard.admit(identity, request.seq, digest)
        except ProtocolError as exc:
            self._reject(context, exc.code, identity, _one_line(exc))
        if new:
            outcome = self._run(identity, request, slot)
        else:
            log.info("device %s retried %s seq %d: answering with the same reply", identity, request.kind, request.seq)
            pending = slot.wait(RETRY_POLL_S)
            while pending is None:
                if not context.is_active():  # the retrying client left too: free this worker
                    return
                pending = slot.wait(RETRY_POLL_S)
            outcome = pending
        if outcome.reply is None:
            _abort(context, outcome.code, outcome.details)
        for chunk in outcome.reply.chunks(self.chunk_bytes):
            self.stats.add_sent(identity, chunk.ByteSize(), len(chunk.data))
            yield chunk

    def _check_header(self, identity: str, header: Header) -> None:
        if header.device != identity:
            raise ProtocolError(
                grpc.StatusCode.PERMISSION_DENIED, f"device {identity} cannot submit for {header.device}"
            )
        self._guard.precheck(identity, header.seq)

    def _count_received(self, identity: str, chunk: Chunk) -> None:
        self.stats.add_received(identity, chunk.ByteSize(), len(chunk.data))

    def _run(self, identity: str, request: Message, slot: Slot) -> Outcome:
        """Call the handler once for this request; whatever happens, the slot gets an outcome for retries."""
        code, details = grpc.StatusCode.INTERNAL, f"the server failed on a {request.kind!r} request (see its log)"
        outcome = Outcome(code=code, details=details)
        try:
            reply = self._handler(identity, request)
        except ProtocolError as exc:
            outcome = Outcome(code=exc.code, details=_one_line(exc))
        except InputError as exc:
            outcome = Outcome(code=grpc.StatusCode.INVALID_ARGUMENT, details=_one_line(exc))
        except PermissionError as exc:
            outcome = Outcome(code=grpc.StatusCode.PERMISSION_DENIED, details=_one_line(exc))
        except Exception:
            log.exception("the handler failed on %s seq %d from device %s", request.kind, request.seq, identity)
        else:
            outcome = self._prepare_reply(identity, request, reply, outcome)
        finally:
            slot.finish(outcome)
        if outcome.reply is None and outcome.code is not grpc.StatusCode.INTERNAL:
            log.warning(
                "refused %s seq %d from device %s: %s %s",
                request.kind,
                request.seq,
                identity,
                outcome.code.name,
                outcome.details,
            )
        return outcome

    def _prepare_reply(self, identity: str, request: Message, reply: object, failed: Outcome) -> Outcome:
        if not isinstance(reply, Message):
            log.error(
                "the handler answered %s from %s with %r instead of a Message", request.kind, identity, type(reply)
            )
            return failed
        try:
            # The transport, not the handler, guarantees a reply is addressed to its caller and echoes its seq.
            return Outcome(reply=prepare(replace(reply, device=identity, seq=request.seq)))
        except NetInputError as exc:
            log.error("the handler's reply to %s from %s is invalid: %s", request.kind, identity, _one_line(exc))
            return failed
