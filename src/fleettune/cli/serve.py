"""`fleettune serve`: the edge server of a deployment, training with devices that `fleettune join`."""

from __future__ import annotations

import json
import logging
import time
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fleettune.cli.paths import check_output_dir
from fleettune.cli.run import raise_if_interrupted, stop_notice
from fleettune.config import build_config, resolved_dict
from fleettune.errors import InputError
from fleettune.report import build_report, write_report
from fleettune.report.adapter_file import save_adapter
from fleettune.report.summary import print_summary
from fleettune.runner import prepare
from fleettune.runtime.net.coordinator import DEPLOYABLE, Coordinator, ServeOptions
from fleettune.runtime.net.driver import drive
from fleettune.runtime.net.transport import Authenticator, MutualTLSAuth, NetServer, OpenAuth, ServerTLS, TokenAuth
from fleettune.runtime.net.transport.address import is_loopback, parse_address
from fleettune.runtime.progress import RoundRecord
from fleettune.runtime.stop import stop_on_interrupt

Opt = typer.Option


def serve(
    listen: Annotated[str, Opt(help="HOST:PORT to listen on (port 0: any free port, printed at start).")],
    out: Annotated[Path, Opt("--out", help="Directory for report.json and the resolved config.")],
    config: Annotated[Path | None, Opt("--config", help="A TOML run config (scheme mesfl or splitfed).")] = None,
    tls_cert: Annotated[Path | None, Opt("--tls-cert", help="Server certificate (PEM).")] = None,
    tls_key: Annotated[Path | None, Opt("--tls-key", help="Server private key (PEM).")] = None,
    client_ca: Annotated[
        Path | None, Opt("--client-ca", help="CA of device certificates: devices are identified by mutual TLS.")
    ] = None,
    tokens: Annotated[Path | None, Opt("--tokens", help="File of 'device-id token' lines.")] = None,
    insecure: Annotated[bool, Opt("--insecure", help="Allow a non-loopback address without TLS.")] = False,
    checkpoint_dir: Annotated[
        Path | None, Opt("--checkpoint-dir", help="Checkpoint here after every aggregation.")
    ] = None,
    resume: Annotated[bool, Opt("--resume", help="Go on from the checkpoint in --checkpoint-dir.")] = False,
    min_devices: Annotated[int | None, Opt("--min-devices", help="Start once this many are ready.")] = None,
    join_timeout: Annotated[float, Opt("--join-timeout", help="Seconds to wait for devices.")] = 600.0,
    step_timeout: Annotated[
        float, Opt("--step-timeout", help="Seconds a device may take for a step or upload before it is dropped.")
    ] = 120.0,
    poll: Annotated[float, Opt("--poll", help="Seconds a device's poll is held when there is no work.")] = 5.0,
    overrides: Annotated[list[str] | None, Opt("--set", help="key=value config override (repeatable).")] = None,
) -> None:
    """Run the edge server: admit the fleet's devices, train, checkpoint, write DIR/report.json."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if (tls_cert is None) != (tls_key is None):
        raise InputError("--tls-cert/--tls-key: give both the certificate and its key, or neither")
    if resume and checkpoint_dir is None:
        raise InputError("--resume needs --checkpoint-dir: the folder the interrupted server checkpointed to")
    tls = ServerTLS(tls_cert, tls_key, client_ca) if tls_cert is not None and tls_key is not None else None
    if client_ca is not None and tls is None:
        raise InputError("--client-ca needs --tls-cert and --tls-key: mutual TLS runs over TLS")
    auth = _authenticator(listen, tokens, client_ca, insecure)
    host, _ = parse_address(listen)
    if tls is None and not insecure and not is_loopback(host):  # before the model and data are loaded
        raise InputError(f"--listen {listen}: a non-loopback address needs --tls-cert/--tls-key or --insecure")
    resolved = build_config(config, {}, overrides)
    if resolved.scheme not in DEPLOYABLE:
        raise InputError(f"scheme: {resolved.scheme} cannot be deployed; expected one of {', '.join(DEPLOYABLE)}")
    if min_devices is not None and min_devices < 1:
        raise InputError(f"--min-devices: expected an integer >= 1, got {min_devices}")
    check_output_dir(out)
    if checkpoint_dir is not None:
        check_output_dir(checkpoint_dir, "--checkpoint-dir")
    console = Console(stderr=True)
    started = time.perf_counter()

    def on_round(record: RoundRecord) -> None:
        accuracy = "" if record.accuracy is None else f", accuracy {record.accuracy:.4f}"
        loss = "no update" if record.train_loss is None else f"loss {record.train_loss:.4f}"
        console.print(f"round {record.round}: {len(record.participants)} devices, {loss}{accuracy}")

    prepared = prepare(resolved, on_round)
    options = ServeOptions(poll, join_timeout, min_devices, step_timeout, checkpoint_dir)
    coordinator = Coordinator(prepared, options)
    server = NetServer(coordinator.handle, listen=listen, auth=auth, tls=tls, allow_insecure=insecure)
    server.start()
    console.print(f"serving {resolved.scheme} on {host}:{server.port} for {len(coordinator.board.members)} devices")
    try:
        with stop_on_interrupt(prepared.setup.stop, partial(stop_notice, console)):
            result = drive(coordinator, resume=resume)
    finally:
        server.stop(grace_s=2.0)
    report = build_report(prepared, result, time.perf_counter() - started)
    report["time_basis"] = "wall-clock"
    report["deployment"] = {
        "listen": f"{host}:{server.port}",
        "tls": tls is not None,
        "wire_bytes": {"received": sum(server.stats.received.values()), "sent": sum(server.stats.sent.values())},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(resolved_dict(resolved), indent=2) + "\n")
    write_report(report, out)
    if result.adapter is not None:
        save_adapter(result.adapter, out)
    print_summary(report, Console())
    raise_if_interrupted(report, out)  # after the summary of the rounds it ran; the CLI exits 130
    Console().print(f"report: {out / 'report.json'}")


def _authenticator(listen: str, tokens: Path | None, client_ca: Path | None, insecure: bool) -> Authenticator:
    if tokens is not None:
        return TokenAuth.from_file(tokens)
    if client_ca is not None:
        return MutualTLSAuth()
    host, _ = parse_address(listen)
    if not is_loopback(host) and not insecure:
        raise InputError(
            f"--listen {listen}: devices on the network must authenticate; expected --tokens or --client-ca"
        )
    return OpenAuth()
