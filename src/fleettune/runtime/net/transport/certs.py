"""A deployment's key material: a private CA, the server's certificate, one certificate and token per device."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleettune.runtime.net.transport.errors import NetInputError
from fleettune.runtime.net.transport.message import check_device_id

ALWAYS_HOSTS = ("localhost", "127.0.0.1")
_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
HOSTNAME = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})*")
# Certificates start a little in the past: a device whose clock lags the CA's must not see them as not yet valid.
CLOCK_SKEW = dt.timedelta(minutes=10)


def _key() -> ec.EllipticCurvePrivateKey:
    # P-256: small, fast on device CPUs, and supported by every TLS stack gRPC builds on.
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fleettune"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    days: int,
    usage: x509.ObjectIdentifier | None,
    hosts: Sequence[str] = (),
) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    is_ca = issuer is None
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer is not None else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        authority = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())
        builder = builder.add_extension(authority, critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if hosts:
        builder = builder.add_extension(_san(hosts), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: never overwrite key material in place; the mode applies from creation, not after a chmod.
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
    except OSError as exc:
        raise NetInputError(f"out: cannot write {path} ({exc.strerror or exc})") from None


def _check(out: Path, hosts: Sequence[str], devices: Sequence[str], days: int) -> None:
    if isinstance(devices, str) or not devices:
        raise NetInputError("device: expected at least one device id")
    for device in devices:
        check_device_id(device, "device")
    duplicates = sorted({d for d in devices if list(devices).count(d) > 1})
    if duplicates:
        raise NetInputError(f"device: {', '.join(duplicates)} given more than once")
    for host in hosts:
        if not (_is_ip(host) or HOSTNAME.fullmatch(host)):
            raise NetInputError(f"host: expected a DNS name or IP address, got {host!r}")
    if not isinstance(days, int) or days < 1:
        raise NetInputError(f"days: expected a whole number of days >= 1, got {days!r}")
    if out.exists() and not out.is_dir():
        raise NetInputError(f"out: {out} exists and is not a directory")
    targets = ["ca.pem", "ca.key", "server.pem", "server.key", "tokens.txt"]
    targets += [f"devices/{d}.{ext}" for d in devices for ext in ("pem", "key")]
    taken = [name for name in targets if (out / name).exists()]
    if taken:
        raise NetInputError(f"out: {out} already holds {taken[0]}; choose a new directory (nothing is overwritten)")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def make_certificates(out: Path, hosts: Sequence[str], devices: Sequence[str], days: int = 365) -> dict[str, Path]:
    """Write a CA, a server certificate for `hosts` and a certificate and token per device into `out`.

    Returns the written files keyed by their path relative to `out` (``ca.pem``, ``devices/d1.key``, ...).
    The server certificate always names localhost and 127.0.0.1 too. Keys and tokens.txt are mode 0600.
    """
    out = Path(out)
    _check(out, hosts, devices, days)
    server_hosts = list(dict.fromkeys([*hosts, *ALWAYS_HOSTS]))
    try:
        (out / "devices").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NetInputError(f"out: cannot create {out / 'devices'} ({exc.strerror or exc})") from None
    ca_key = _key()
    ca = _issue("fleettune deployment CA", ca_key, None, ca_key, days, None)
    server_key = _key()
    server = _issue(server_hosts[0], server_key, ca, ca_key, days, ExtendedKeyUsageOID.SERVER_AUTH, server_hosts)
    written: dict[str, Path] = {}

    def put(name: str, data: bytes, mode: int) -> None:
        _write(out / name, data, mode)
        written[name] = out / name

    put("ca.pem", _pem(ca), 0o644)
    put("ca.key", _pem_key(ca_key), 0o600)
    put("server.pem", _pem(server), 0o644)
    put("server.key", _pem_key(server_key), 0o600)
    lines = ["# fleettune device tokens: one 'DEVICE-ID TOKEN' per line (serve --tokens); keep this file secret"]
    for device in devices:
        key = _key()
        certificate = _issue(device, key, ca, ca_key, days, ExtendedKeyUsageOID.CLIENT_AUTH)
        put(f"devices/{device}.pem", _pem(certificate), 0o644)
        put(f"devices/{device}.key", _pem_key(key), 0o600)
        lines.append(f"{device} {secrets.token_urlsafe(32)}")
    put("tokens.txt", ("\n".join(lines) + "\n").encode(), 0o600)
    return written
