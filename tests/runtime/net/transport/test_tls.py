"""TLS between device and server: certificates from make_certificates, wrong CAs, and mutual TLS identities."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from fleettune.runtime.net.transport import (
    AuthError,
    ClientTLS,
    MutualTLSAuth,
    NetClient,
    NetInputError,
    NetServer,
    RemoteError,
    ServerTLS,
    make_certificates,
)
from tests.runtime.net.transport.conftest import TOKENS, Echo

Serve = Callable[..., NetServer]
Connect = Callable[..., NetClient]


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("other")
    make_certificates(out, ["localhost"], ["d1"], days=2)
    return out / "ca.pem"


def _server_tls(certs: Path, mutual: bool = False) -> ServerTLS:
    return ServerTLS(certs / "server.pem", certs / "server.key", certs / "ca.pem" if mutual else None)


def test_a_client_trusting_the_ca_reaches_a_tls_server(serve: Serve, echo: Echo, cert_dir: Path) -> None:
    server = serve(echo, tls=_server_tls(cert_dir))
    for host in ("localhost", "127.0.0.1"):  # both are names on the server certificate
        with NetClient(f"{host}:{server.port}", "d1", token=TOKENS["d1"], tls=ClientTLS(cert_dir / "ca.pem")) as c:
            assert c.call("join", payload=b"secret").payload == b"secret"


def test_a_client_with_another_ca_cannot_connect(serve: Serve, echo: Echo, cert_dir: Path, other_ca: Path) -> None:
    server = serve(echo, tls=_server_tls(cert_dir))
    client = NetClient(f"localhost:{server.port}", "d1", token=TOKENS["d1"], tls=ClientTLS(other_ca), retry_s=0)
    with client, pytest.raises(RemoteError) as caught:
        client.call("join")
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE and echo.calls == []


def test_a_plaintext_client_cannot_talk_to_a_tls_server(
    serve: Serve, connect: Connect, echo: Echo, cert_dir: Path
) -> None:
    with pytest.raises(RemoteError, match="UNAVAILABLE"):
        connect(serve(echo, tls=_server_tls(cert_dir))).call("join")


def test_mutual_tls_identifies_the_device_by_its_certificate(serve: Serve, echo: Echo, cert_dir: Path) -> None:
    server = serve(echo, auth=MutualTLSAuth(), tls=_server_tls(cert_dir, mutual=True))
    for device in ("d1", "d2"):
        tls = ClientTLS(cert_dir / "ca.pem", cert_dir / f"devices/{device}.pem", cert_dir / f"devices/{device}.key")
        with NetClient(f"localhost:{server.port}", device, tls=tls) as client:
            assert client.call("join").fields["identity"] == device


def test_a_certificate_for_one_device_cannot_submit_as_another(serve: Serve, echo: Echo, cert_dir: Path) -> None:
    server = serve(echo, auth=MutualTLSAuth(), tls=_server_tls(cert_dir, mutual=True))
    d1_cert = ClientTLS(cert_dir / "ca.pem", cert_dir / "devices/d1.pem", cert_dir / "devices/d1.key")
    with NetClient(f"localhost:{server.port}", "d2", tls=d1_cert) as client, pytest.raises(RemoteError) as caught:
        client.call("join")
    assert caught.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert caught.value.details == "device d1 cannot submit for d2" and echo.calls == []


def test_mutual_tls_refuses_a_client_without_a_certificate(serve: Serve, echo: Echo, cert_dir: Path) -> None:
    server = serve(echo, auth=MutualTLSAuth(), tls=_server_tls(cert_dir, mutual=True))
    client = NetClient(f"localhost:{server.port}", "d1", tls=ClientTLS(cert_dir / "ca.pem"), retry_s=0)
    with client, pytest.raises(RemoteError, match="UNAVAILABLE"):
        client.call("join")
    assert echo.calls == []


def test_mutual_tls_auth_needs_a_client_ca(echo: Echo, cert_dir: Path) -> None:
    with pytest.raises(AuthError, match=r"^client-ca: .*needs --client-ca"):
        NetServer(echo, listen="127.0.0.1:0", auth=MutualTLSAuth(), tls=_server_tls(cert_dir))


def test_server_name_checks_the_certificate_under_another_name(serve: Serve, echo: Echo, cert_dir: Path) -> None:
    server = serve(echo, tls=_server_tls(cert_dir))
    wrong = ClientTLS(cert_dir / "ca.pem", server_name="not-the-server.example")
    client = NetClient(f"127.0.0.1:{server.port}", "d1", token=TOKENS["d1"], tls=wrong, retry_s=0)
    with client, pytest.raises(RemoteError, match="UNAVAILABLE"):
        client.call("join")
    right = ClientTLS(cert_dir / "ca.pem", server_name="localhost")
    with NetClient(f"127.0.0.1:{server.port}", "d1", token=TOKENS["d1"], tls=right) as client:
        assert client.call("join").kind == "echo_join"


def test_unusable_tls_files_are_input_errors_naming_the_flag_and_file(
    echo: Echo, cert_dir: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "nope.pem"
    not_pem = tmp_path / "junk.pem"
    not_pem.write_text("hello\n")

    def server_with(tls: ServerTLS) -> None:
        NetServer(echo, listen="127.0.0.1:0", auth=MutualTLSAuth(), tls=tls)

    cases = [
        (ServerTLS(missing, cert_dir / "server.key", cert_dir / "ca.pem"), rf"^tls-cert: cannot read {missing}"),
        (ServerTLS(not_pem, cert_dir / "server.key", cert_dir / "ca.pem"), "^tls-cert: .*holds no PEM certificate"),
        (ServerTLS(cert_dir / "server.pem", not_pem, cert_dir / "ca.pem"), "^tls-key: .*not an unencrypted PEM"),
        (ServerTLS(cert_dir / "server.pem", cert_dir / "ca.key", cert_dir / "ca.pem"), "does not belong"),
        (ServerTLS(cert_dir / "server.pem", cert_dir / "server.key", missing), "^client-ca: cannot read"),
    ]
    for tls, expected in cases:
        with pytest.raises(NetInputError, match=expected):
            server_with(tls)
    with pytest.raises(NetInputError, match=r"^tls-ca: cannot read"):
        NetClient("localhost:1", "d1", tls=ClientTLS(missing))
    with pytest.raises(NetInputError, match="needs both its certificate and its key"):
        NetClient("localhost:1", "d1", tls=ClientTLS(cert_dir / "ca.pem", cert=cert_dir / "devices/d1.pem"))
