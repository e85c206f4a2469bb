"""TLS settings of both ends, and reading and checking their PEM files before gRPC sees them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fleettune.runtime.net.transport.errors import NetInputError


def _read(path: Path, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise NetInputError(f"{flag}: cannot read {path} ({exc.strerror or exc})") from None


def read_certificates(path: Path, flag: str) -> tuple[bytes, list[x509.Certificate]]:
    """A PEM file of one or more certificates (a chain or a CA bundle)."""
    data = _read(path, flag)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise NetInputError(f"{flag}: {path} holds no PEM certificate (expected '-----BEGIN CERTIFICATE-----')")
    return data, certificates


def read_key(path: Path, flag: str, certificate: x509.Certificate) -> bytes:
    """An unencrypted PEM private key that belongs to `certificate`."""
    data = _read(path, flag)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        # TypeError: the key is encrypted; gRPC cannot ask for a passphrase.
        raise NetInputError(f"{flag}: {path} is not an unencrypted PEM private key") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if key.public_key().public_bytes(encoding, public) != certificate.public_key().public_bytes(encoding, public):
        raise NetInputError(f"{flag}: the key in {path} does not belong to its certificate")
    return data


@dataclass(frozen=True)
class ServerTLS:
    """The server's certificate and key; with `client_ca`, clients must present a certificate it signed."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        chain, certificates = read_certificates(self.cert, "tls-cert")
        key = read_key(self.key, "tls-key", certificates[0])
        client_ca = read_certificates(self.client_ca, "client-ca")[0] if self.client_ca is not None else None
        return grpc.ssl_server_credentials(
            [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
        )


@dataclass(frozen=True)
class ClientTLS:
    """The CA that signed the server's certificate; `cert`/`key` for mutual TLS; `server_name` to check
    the server's certificate against when the address is not one of its names."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        ca = read_certificates(self.ca, "tls-ca")[0]
        if (self.cert is None) != (self.key is None):
            raise NetInputError("tls-cert/tls-key: a client certificate needs both its certificate and its key")
        if self.cert is None or self.key is None:
            return grpc.ssl_channel_credentials(root_certificates=ca)
        chain, certificates = read_certificates(self.cert, "tls-cert")
        key = read_key(self.key, "tls-key", certificates[0])
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=chain)
