"""An in-process transport: devices call the server's handler directly (tests, single-machine trials).

It behaves as the gRPC transport does towards its users: sequence numbers, the same `Message`, and an
error reply raised as `RemoteError`, so a device agent cannot tell the two apart.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import grpc

from fleettune.errors import InputError
from fleettune.runtime.net.transport.errors import RemoteError
from fleettune.runtime.net.transport.message import Handler, Message


class LocalCaller:
    def __init__(self, handler: Handler, device: str) -> None:
        self.handler, self.device = handler, device
        self._seq = itertools.count(1)

    def call(
        self, kind: str, fields: Mapping[str, str] | None = None, payload: bytes = b"", timeout_s: float | None = None
    ) -> Message:
        request = Message(kind, self.device, next(self._seq), dict(fields or {}), payload)
        try:
            return self.handler(self.device, request)
        except InputError as exc:
            raise RemoteError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        except PermissionError as exc:
            raise RemoteError(grpc.StatusCode.PERMISSION_DENIED, str(exc)) from None
