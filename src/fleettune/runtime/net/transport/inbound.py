"""Reading one request stream on the server, with a watchdog that drops senders that go quiet."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import grpc

from fleettune.runtime.net.transport.errors import ProtocolError
from fleettune.runtime.net.transport.fleet_pb2 import Chunk
from fleettune.runtime.net.transport.message import Message
from fleettune.runtime.net.transport.wire import Assembler


class Inbound:
    """Pulls a request's chunks on a thread of its own so the serving thread can give up on a stalled sender.

    gRPC's synchronous API has no per-message timeout: reading blocks until the client sends or leaves,
    so a client that opens a stream and trickles (or sends nothing) would otherwise hold a worker forever.
    Once the serving thread aborts the call, gRPC ends the stream and this thread's blocked read returns.
    """

    def __init__(self, requests: Iterator[Chunk], assembler: Assembler, on_chunk: Callable[[Chunk], None]) -> None:
        self.assembler = assembler
        self._requests = requests
        self._on_chunk = on_chunk
        self._done = threading.Event()
        self._last_activity = time.monotonic()
        self._error: BaseException | None = None

    def _read(self) -> None:
        try:
            for chunk in self._requests:
                self._last_activity = time.monotonic()
                self._on_chunk(chunk)
                if self.assembler.add(chunk):
                    # Complete: the client half-closes next; nothing more to wait for.
                    return
            self.assembler.finish()
        except BaseException as exc:  # handed to the serving thread, which answers for it
            self._error = exc
        finally:
            self._done.set()

    def receive(self, idle_timeout_s: float) -> Message:
        """The complete message. Raises ProtocolError for a broken or quiet stream, grpc.RpcError if the
        client left."""
        threading.Thread(target=self._read, name="fleettune-net-read", daemon=True).start()
        while True:
            remaining = self._last_activity + idle_timeout_s - time.monotonic()
            if remaining <= 0 and not self._done.is_set():
                raise ProtocolError(
                    grpc.StatusCode.DEADLINE_EXCEEDED, f"no data for {idle_timeout_s:g} s: the request stream stalled"
                )
            if self._done.wait(max(remaining, 0.0)):
                break
        if self._error is not None:
            raise self._error
        message = self.assembler.message
        assert message is not None
        return message
