"""The deployment's transport: authenticated, chunked gRPC request/reply between devices and the edge server.

TLS is on by default off loopback; devices authenticate by token or client certificate; a replay guard
orders each device's requests and answers exact retries from the kept reply. A device calls
`NetClient.call(kind, fields, payload)`; the server's `Handler` gets `(identity, request)` and returns the
reply. Payloads of any size travel as chunks with a SHA-256 check.
"""

from fleettune.runtime.net.transport.auth import Authenticator, MutualTLSAuth, OpenAuth, TokenAuth
from fleettune.runtime.net.transport.certs import make_certificates
from fleettune.runtime.net.transport.client import NetClient
from fleettune.runtime.net.transport.errors import AuthError, NetInputError, ProtocolError, RemoteError
from fleettune.runtime.net.transport.message import Handler, Message
from fleettune.runtime.net.transport.server import NetServer
from fleettune.runtime.net.transport.stats import WireStats
from fleettune.runtime.net.transport.tls import ClientTLS, ServerTLS

__all__ = [
    "AuthError",
    "Authenticator",
    "ClientTLS",
    "Handler",
    "Message",
    "MutualTLSAuth",
    "NetClient",
    "NetInputError",
    "NetServer",
    "OpenAuth",
    "ProtocolError",
    "RemoteError",
    "ServerTLS",
    "TokenAuth",
    "WireStats",
    "make_certificates",
]
