"""What the transport carries: a `Message`, the server's `Handler`, and the checks on kinds and device ids."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from fleettune.runtime.net.transport.errors import NetInputError

KIND = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Device ids end up in file names (devices/<id>.pem), token files and gRPC metadata: keep them plain ASCII.
DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class Message:
    """One request or reply. `seq` is the device's sequence number; a reply echoes its request's."""

    kind: str
    device: str
    seq: int
    fields: Mapping[str, str] = field(default_factory=dict)
    payload: bytes = b""


# handler(identity, request) -> reply; `identity` is the authenticated device id.
Handler = Callable[[str, Message], Message]


def check_kind(kind: object, what: str = "kind") -> str:
    if not isinstance(kind, str) or not KIND.fullmatch(kind):
        raise NetInputError(f"{what}: expected a short name matching [a-z][a-z0-9_]* (at most 64 chars), got {kind!r}")
    return kind


def check_device_id(device: object, what: str = "device") -> str:
    if not isinstance(device, str) or not DEVICE_ID.fullmatch(device):
        raise NetInputError(
            f"{what}: expected a device id of letters, digits, '.', '_' or '-' (at most 128 chars, "
            f"starting with a letter or digit), got {device!r}"
        )
    return device


def check_fields(fields: Mapping[str, str], what: str = "fields") -> dict[str, str]:
    checked: dict[str, str] = {}
    for key, value in fields.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise NetInputError(f"{what}: keys and values must be strings, got {key!r}: {value!r}")
        checked[key] = value
    return checked
