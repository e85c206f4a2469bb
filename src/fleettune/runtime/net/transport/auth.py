"""Who is calling: per-device tokens, client-certificate common names, or (loopback trials only) trust."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from fleettune.runtime.net.transport.errors import AuthError
from fleettune.runtime.net.transport.message import DEVICE_ID

# gRPC metadata keys a client sends on every call.
DEVICE_KEY = "x-fleettune-device"
TOKEN_KEY = "x-fleettune-token"
MIN_TOKEN_CHARS = 16


class Authenticator(Protocol):
    def identify(self, metadata: Mapping[str, str], peer_common_name: str | None) -> str | None:
        """The authenticated device id, or None to refuse the call (UNAUTHENTICATED)."""
        ...


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


# Compared against when the claimed device is unknown, so unknown and known ids take the same path.
_NO_DEVICE = _digest("\0 no such device \0")


def _check_pair(device: str, token: str, where: str) -> None:
    if not DEVICE_ID.fullmatch(device):
        raise AuthError(
            f"{where}: device id {device[:80]!r} must be letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit)"
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise AuthError(
            f"{where}: the token of {device!r} has {len(token)} characters; expected at least {MIN_TOKEN_CHARS}"
        )
    # Tokens travel as gRPC metadata, which only carries printable ASCII.
    if not all(33 <= ord(c) <= 126 for c in token):
        raise AuthError(f"{where}: the token of {device!r} must be printable ASCII without spaces")


class TokenAuth:
    """Per-device shared tokens, held only as SHA-256 digests and compared in constant time."""

    def __init__(self, digests: Mapping[str, bytes]) -> None:
        self._digests = dict(digests)

    @property
    def devices(self) -> list[str]:
        return sorted(self._digests)

    @classmethod
    def from_pairs(cls, pairs: Mapping[str, str]) -> TokenAuth:
        if not pairs:
            raise AuthError("tokens: no devices given; expected at least one device id and token")
        for device, token in pairs.items():
            _check_pair(device, token, f"tokens[{device[:80]!r}]")
        return cls({device: _digest(token) for device, token in pairs.items()})

    @classmethod
    def from_file(cls, path: Path) -> TokenAuth:
        """One ``DEVICE-ID TOKEN`` pair per line; blank lines and lines starting with ``#`` are skipped."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise AuthError(f"tokens: cannot read the token file {path} ({reason})") from None
        digests: dict[str, bytes] = {}
        first_line: dict[str, int] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{path}:{number}"
            parts = line.split()
            if len(parts) != 2:
                raise AuthError(f"{where}: expected 'DEVICE-ID TOKEN' (two fields), got {len(parts)} fields")
            device, token = parts
            if device in first_line:
                raise AuthError(f"{where}: device {device!r} is already listed on line {first_line[device]}")
            _check_pair(device, token, where)
            first_line[device] = number
            digests[device] = _digest(token)
        if not digests:
            raise AuthError(f"{path}: the token file lists no devices; expected 'DEVICE-ID TOKEN' lines")
        return cls(digests)

    def identify(self, metadata: Mapping[str, str], peer_common_name: str | None) -> str | None:
        device = metadata.get(DEVICE_KEY, "")
        token = metadata.get(TOKEN_KEY)
        if token is None:
            return None
        expected = self._digests.get(device, _NO_DEVICE)
        matches = hmac.compare_digest(_digest(token), expected)
        return device if matches and device in self._digests else None


class MutualTLSAuth:
    """The device is the common name of the client certificate the server's client CA verified.

    Needs `ServerTLS.client_ca`: without it no client certificate is asked for, so no one is identified.
    """

    def identify(self, metadata: Mapping[str, str], peer_common_name: str | None) -> str | None:
        if peer_common_name is None or not DEVICE_ID.fullmatch(peer_common_name):
            return None
        return peer_common_name


class OpenAuth:
    """Believes the device id the client claims: for loopback trials and tests only."""

    def identify(self, metadata: Mapping[str, str], peer_common_name: str | None) -> str | None:
        device = metadata.get(DEVICE_KEY, "")
        return device if DEVICE_ID.fullmatch(device) else None
