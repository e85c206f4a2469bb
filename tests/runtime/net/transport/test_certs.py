"""make_certificates and the `fleettune certs` command: which files, what is in them, who may read them."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleettune.cli.main import main
from fleettune.runtime.net.transport import NetInputError, TokenAuth, make_certificates


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _cn(certificate: x509.Certificate) -> str:
    return str(certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_the_files_their_modes_and_the_certificates_inside(tmp_path: Path) -> None:
    written = make_certificates(tmp_path / "out", ["edge.example", "10.1.2.3"], ["d1", "d2"], days=30)
    out = tmp_path / "out"
    assert set(written) == {
        "ca.pem", "ca.key", "server.pem", "server.key", "tokens.txt",
        "devices/d1.pem", "devices/d1.key", "devices/d2.pem", "devices/d2.key",
    }  # fmt: skip
    assert all(path == out / name and path.is_file() for name, path in written.items())
    for name in ("ca.key", "server.key", "devices/d1.key", "devices/d2.key", "tokens.txt"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name
    ca, server = _load(out / "ca.pem"), _load(out / "server.pem")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"edge.example", "localhost"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address(a) for a in ("10.1.2.3", "127.0.0.1")}
    for device in ("d1", "d2"):
        client = _load(out / f"devices/{device}.pem")
        assert _cn(client) == device and client.issuer == ca.subject
        usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        client.verify_directly_issued_by(ca)
    server.verify_directly_issued_by(ca)
    lifetime = server.not_valid_after_utc - server.not_valid_before_utc
    assert 30 <= lifetime.days <= 31


def test_tokens_txt_is_in_the_serve_tokens_format(tmp_path: Path) -> None:
    make_certificates(tmp_path, [], ["d1", "d2"])
    lines = [ln for ln in (tmp_path / "tokens.txt").read_text().splitlines() if not ln.startswith("#")]
    tokens = dict(line.split() for line in lines)
    assert set(tokens) == {"d1", "d2"} and len(set(tokens.values())) == 2
    assert all(len(token) >= 40 for token in tokens.values())  # token_urlsafe(32): 43 characters
    auth = TokenAuth.from_file(tmp_path / "tokens.txt")
    metadata = {"x-fleettune-device": "d2", "x-fleettune-token": tokens["d2"]}
    assert auth.identify(metadata, None) == "d2"


def test_nothing_is_overwritten_and_bad_arguments_are_input_errors(tmp_path: Path) -> None:
    make_certificates(tmp_path, ["h"], ["d1"])
    before = (tmp_path / "ca.key").read_bytes()
    with pytest.raises(NetInputError, match=r"already holds ca\.pem"):
        make_certificates(tmp_path, ["h"], ["d1"])
    assert (tmp_path / "ca.key").read_bytes() == before
    for hosts, devices, days, expected in [
        (["h"], [], 1, "^device: expected at least one"),
        (["h"], ["../escape"], 1, "^device: expected a device id"),
        (["h"], ["d1", "d1"], 1, "^device: d1 given more than once"),
        (["bad host"], ["d1"], 1, "^host: expected a DNS name or IP address"),
        (["h"], ["d1"], 0, "^days: expected a whole number of days >= 1"),
    ]:
        with pytest.raises(NetInputError, match=expected):
            make_certificates(tmp_path / "new", hosts, devices, days)


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_certs_command_writes_the_files_and_says_how_to_use_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "deploy"
    code, stdout, _ = _cli(["certs", "--out", str(out), "--host", "myhost", "--device", "d1", "--device", "d2"], capsys)
    assert code == 0
    for name in ("ca.pem", "server.pem", "server.key", "devices/d1.pem", "devices/d2.key", "tokens.txt"):
        assert (out / name).is_file() and str(out / name) in stdout
    san = _load(out / "server.pem").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "myhost" in san.get_values_for_type(x509.DNSName)
    for flag in ("serve", "--tls-cert", "--tls-key", "--client-ca", "--tokens", "join", "--tls-ca", "--token"):
        assert flag in stdout
    assert (out / "tokens.txt").read_text().split("\n")[1].split()[1] not in stdout  # tokens are not echoed


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["certs", "--device", "d1"], "Missing option '--out'"),
        (["certs", "--out", "{out}"], "device: expected at least one --device"),
        (["certs", "--out", "{out}", "--device", "d 1"], "device: expected a device id"),
        (["certs", "--out", "{out}", "--device", "d1", "--days", "0"], "days: expected a whole number"),
        (["certs", "--out", "{out}", "--device", "d1", "--host", "a/b"], "host: expected a DNS name"),
    ],
)
def test_bad_certs_arguments_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    code, _, stderr = _cli([a.replace("{out}", str(tmp_path / "o")) for a in argv], capsys)
    assert code == 2 and stderr.count("\n") == 1
    assert stderr.startswith("fleettune: error: ") and expected in stderr
    assert not (tmp_path / "o" / "ca.key").exists()
