"""`fleettune certs`: a private CA, the server's certificate and each device's certificate and token."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fleettune.errors import ConfigError
from fleettune.runtime.net.transport import make_certificates
from fleettune.runtime.net.transport.certs import ALWAYS_HOSTS

Opt = typer.Option


def certs(
    out: Annotated[Path, Opt("--out", help="Directory to write into; existing files are never overwritten.")],
    host: Annotated[
        list[str] | None,
        Opt("--host", help="DNS name or IP devices reach the server by (repeatable); localhost is always in."),
    ] = None,
    device: Annotated[list[str] | None, Opt("--device", help="A device id (repeatable, at least one).")] = None,
    days: Annotated[int, Opt("--days", help="How long the certificates stay valid.")] = 365,
) -> None:
    """Write the key material of a deployment: CA, server certificate, per-device certificates and tokens."""
    if not device:
        raise ConfigError("device: expected at least one --device ID (repeat --device for each device)")
    hosts = host or ["localhost"]
    written = make_certificates(out, hosts, device, days=days)
    names = ", ".join(dict.fromkeys([*hosts, *ALWAYS_HOSTS]))
    print(f"wrote to {out}: a CA, a server certificate for {names}, and {len(device)} device certificate(s)")
    for name in written:
        print(f"  {out / name}")
    print(f"valid for {days} days. Keep ca.key offline and every .key and tokens.txt secret (mode 0600).")
    server_files = f"--tls-cert {out / 'server.pem'} --tls-key {out / 'server.key'}"
    print("server, with tokens:")
    print(f"  fleettune serve ... {server_files} --tokens {out / 'tokens.txt'}")
    print("server, identifying devices by their certificates instead:")
    print(f"  fleettune serve ... {server_files} --client-ca {out / 'ca.pem'}")
    print(f"each device (copy it ca.pem and its own line's token from tokens.txt; e.g. {device[0]}):")
    print(f"  fleettune join ... --device {device[0]} --tls-ca ca.pem --token TOKEN")
