"""`fleettune join`: one device of a deployment, training its client stage on its own data."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fleettune.errors import InputError
from fleettune.runtime.net.device import DeviceAgent
from fleettune.runtime.net.transport import ClientTLS, NetClient

Opt = typer.Option


def join(
    server: Annotated[str, Opt("--server", help="HOST:PORT of the edge server.")],
    device_id: Annotated[str, Opt("--device-id", help="This device's id in the server's fleet.")],
    data_dir: Annotated[Path, Opt("--data-dir", help="Directory with this device's train.csv|jsonl|txt.")],
    kind: Annotated[str, Opt(help="Hardware kind, for the logs (the server's fleet file is what counts).")] = "",
    token: Annotated[str | None, Opt("--token", help="This device's token (see `serve --tokens`).")] = None,
    token_file: Annotated[Path | None, Opt("--token-file", help="A file holding the token.")] = None,
    tls_ca: Annotated[Path | None, Opt("--tls-ca", help="CA certificate that signed the server's.")] = None,
    tls_client_cert: Annotated[Path | None, Opt("--tls-client-cert", help="Device certificate (mutual TLS).")] = None,
    tls_client_key: Annotated[Path | None, Opt("--tls-client-key", help="Device private key (mutual TLS).")] = None,
    server_name: Annotated[
        str | None, Opt("--server-name", help="Name to check the server's certificate against.")
    ] = None,
    model: Annotated[str | None, Opt(help="Where this device keeps the model, if not where the server says.")] = None,
    insecure: Annotated[bool, Opt("--insecure", help="Allow a non-loopback server without TLS.")] = False,
    retry: Annotated[float, Opt("--retry", help="Seconds to keep retrying an unreachable server.")] = 60.0,
) -> None:
    """Join the edge server at HOST:PORT as DEVICE_ID and train until it says training is over."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if token is not None and token_file is not None:
        raise InputError("--token/--token-file: give the token one way, not both")
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise InputError(f"--token-file {token_file}: cannot read it ({exc.strerror})") from None
    if (tls_client_cert is None) != (tls_client_key is None):
        raise InputError("--tls-client-cert/--tls-client-key: give both, or neither")
    if tls_client_cert is not None and tls_ca is None:
        raise InputError("--tls-client-cert needs --tls-ca: mutual TLS runs over TLS")
    tls = ClientTLS(tls_ca, tls_client_cert, tls_client_key, server_name) if tls_ca is not None else None
    client = NetClient(server, device_id, token=token, tls=tls, retry_s=retry, allow_insecure=insecure)
    try:
        summary = DeviceAgent(device_id, client, data_dir, kind=kind, model=model).run()
    finally:
        client.close()
    Console().print(
        f"device {device_id}: training over ({summary.steps} steps, {summary.uploads} uploads, {summary.loads} loads)"
    )
