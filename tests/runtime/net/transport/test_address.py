"""Addresses: HOST:PORT parsing, bracketed IPv6, and which hosts count as loopback (no TLS needed)."""

from __future__ import annotations

import pytest

from fleettune.runtime.net.transport import NetInputError
from fleettune.runtime.net.transport.address import is_loopback, join_address, parse_address


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [("127.0.0.1:0", "127.0.0.1", 0), ("[::]:7800", "::", 7800), ("edge.lan:443", "edge.lan", 443)],
)
def test_parse_and_join_round_trip(address: str, host: str, port: int) -> None:
    assert parse_address(address) == (host, port)
    assert join_address(host, port) == address


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("localhost", True), ("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("0.0.0.0", False),
     ("::", False), ("10.0.0.2", False), ("edge.lan", False)],
)  # fmt: skip
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_bad_address_names_the_field_it_came_from() -> None:
    with pytest.raises(NetInputError, match=r"^server: expected HOST:PORT .*got 'nohost'"):
        parse_address("nohost", "server")
