"""Listen and connect addresses: parsing HOST:PORT, and telling loopback from the network."""

from __future__ import annotations

import ipaddress

from fleettune.runtime.net.transport.errors import NetInputError


def parse_address(address: str, what: str = "listen") -> tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT``; port 0 asks the system for a free one."""
    text = address.strip() if isinstance(address, str) else ""
    host, sep, port_text = text.rpartition(":")
    expected = f"{what}: expected HOST:PORT such as 0.0.0.0:7800, 127.0.0.1:0 or [::]:7800, got {address!r}"
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise NetInputError(expected)
    if host.startswith("[") or host.endswith("]"):
        if not (host.startswith("[") and host.endswith("]")):
            raise NetInputError(expected)
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise NetInputError(expected) from None
    elif ":" in host or any(c.isspace() or c == "/" for c in host):
        raise NetInputError(expected)  # a bare IPv6 address needs brackets; URLs are not addresses
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
