"""The transport's errors: unusable settings, broken messages, and error replies from the other end."""

from __future__ import annotations

import grpc

from fleettune.errors import InputError


class NetInputError(InputError):
    """Bad input to the transport: a listen address, TLS file, size limit, device id, message kind or field."""


class AuthError(NetInputError):
    """An authentication setting is unusable: a token file, a token, or an authenticator without its TLS."""


class ProtocolError(InputError):
    """A message broke the wire protocol; `code` is the gRPC status the server answers it with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class RemoteError(InputError):
    """The other end answered with an error status (or could not be reached); the message is one line."""

    def __init__(self, code: grpc.StatusCode, details: str, *, address: str = "") -> None:
        self.code = code
        self.details = " ".join((details or "").split()) or "no details"
        where = f" from {address}" if address else ""
        super().__init__(f"{code.name}{where}: {self.details}")
