"""Authenticators: token files and their one-line errors, digests only in memory, certificate names, trust."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleettune.errors import InputError
from fleettune.runtime.net.transport import AuthError, MutualTLSAuth, OpenAuth, TokenAuth

GOOD = "0123456789abcdef"


def _meta(device: str, token: str | None = None) -> dict[str, str]:
    return {"x-fleettune-device": device, **({"x-fleettune-token": token} if token is not None else {})}


def test_a_token_file_with_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text(f"# devices of the lab\n\nd1 {GOOD}\n   d2\t{GOOD}-two  \n# end\n")
    auth = TokenAuth.from_file(path)
    assert auth.devices == ["d1", "d2"]
    assert auth.identify(_meta("d1", GOOD), None) == "d1"
    assert auth.identify(_meta("d2", GOOD + "-two"), None) == "d2"
    assert auth.identify(_meta("d2", GOOD), None) is None  # d1's token is not d2's
    assert auth.identify(_meta("d3", GOOD), None) is None
    assert auth.identify(_meta("d1"), None) is None
    assert auth.identify({}, "d1") is None  # a certificate name is not a token
    assert GOOD not in repr(vars(auth))  # only digests are kept


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"d1 {GOOD}\nd2\n", r":2: expected 'DEVICE-ID TOKEN' \(two fields\), got 1 fields"),
        (f"d1 {GOOD} extra\n", r":1: expected 'DEVICE-ID TOKEN' \(two fields\), got 3 fields"),
        (f"d1 {GOOD}\n\n# again\nd1 {GOOD}x\n", r":4: device 'd1' is already listed on line 1"),
        ("d1 short-token\n", r":1: the token of 'd1' has 11 characters; expected at least 16"),
        (f"d/1 {GOOD}\n", r":1: device id 'd/1' must be letters"),
        ("d1 " + "é" * 16 + "\n", r":1: the token of 'd1' must be printable ASCII"),
        ("# nobody\n", r": the token file lists no devices"),
    ],
)
def test_token_file_errors_name_the_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text(text)
    with pytest.raises(AuthError, match=f"^{path}{expected}") as caught:
        TokenAuth.from_file(path)
    assert isinstance(caught.value, InputError) and "\n" not in str(caught.value)
    assert GOOD not in str(caught.value)


def test_a_missing_token_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(AuthError, match=r"^tokens: cannot read the token file .*nope\.txt \(No such file"):
        TokenAuth.from_file(tmp_path / "nope.txt")


def test_token_pairs_are_checked_like_the_file() -> None:
    assert TokenAuth.from_pairs({"d1": GOOD}).identify(_meta("d1", GOOD), None) == "d1"
    with pytest.raises(AuthError, match=r"^tokens\['d1'\]: the token of 'd1' has 3 characters"):
        TokenAuth.from_pairs({"d1": "abc"})
    with pytest.raises(AuthError, match="no devices"):
        TokenAuth.from_pairs({})


def test_mutual_tls_auth_takes_the_certificate_name_and_ignores_claims() -> None:
    auth = MutualTLSAuth()
    assert auth.identify(_meta("d2"), "d1") == "d1"
    assert auth.identify(_meta("d1"), None) is None
    assert auth.identify({}, "not a device id") is None


def test_open_auth_takes_the_claim_if_it_is_a_device_id() -> None:
    assert OpenAuth().identify(_meta("d7"), None) == "d7"
    assert OpenAuth().identify(_meta("../x"), None) is None and OpenAuth().identify({}, None) is None
