"""Wire format: every message survives a byte round trip, and malformed payloads are refused with a reason."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleettune.privacy.secagg import (
    AdvertiseKeys,
    MaskedInput,
    Message,
    Roster,
    RosterEntry,
    SealedShare,
    SecAggError,
    ShareBundle,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
)

TAG = b"\x01" * 8
KEY = b"\x02" * 32
SHARE = b"\x00" * 65 + b"\x07"

ids = st.text(st.characters(codec="utf-8"), min_size=1, max_size=20).filter(lambda s: len(s.encode()) <= 255)


def examples() -> list[Message]:
    return [
        AdvertiseKeys(TAG, "dev0", KEY, b"\x03" * 32),
        Roster(TAG, (RosterEntry("dev0", KEY, b"\x03" * 32), RosterEntry("dév1", b"\x04" * 32, b"\x05" * 32))),
        ShareKeys(TAG, "dev0", (SealedShare("dev0", "dev1", b"sealed"), SealedShare("dev0", "dev2", b""))),
        ShareBundle(TAG, "dev1", (SealedShare("dev0", "dev1", b"x" * 160),)),
        MaskedInput(TAG, "dev0", 32, np.array([0, 1, 2**32 - 1], dtype=np.uint32)),
        MaskedInput(TAG, "dev0", 64, np.array([2**64 - 1], dtype=np.uint64)),
        UnmaskRequest(TAG, ("dev0", "dev1"), ("dev2",)),
        UnmaskResponse(TAG, "dev0", (("dev0", SHARE), ("dev1", SHARE)), (("dev2", SHARE),)),
    ]


@pytest.mark.parametrize("message", examples(), ids=lambda m: type(m).__name__)
def test_round_trip(message: Message) -> None:
    data = message.to_bytes()
    decoded = decode_message(data)
    assert type(decoded) is type(message)
    assert decoded.to_bytes() == data
    if isinstance(message, MaskedInput):
        assert isinstance(decoded, MaskedInput)
        np.testing.assert_array_equal(decoded.masked, message.masked)
        assert decoded.masked.dtype == message.masked.dtype
    else:
        assert decoded == message


@settings(max_examples=30)
@given(sender=ids, receivers=st.lists(ids, max_size=5), blobs=st.lists(st.binary(max_size=300), min_size=5, max_size=5))
def test_share_keys_round_trip_for_any_ids(sender: str, receivers: list[str], blobs: list[bytes]) -> None:
    message = ShareKeys(TAG, sender, tuple(SealedShare(sender, r, b) for r, b in zip(receivers, blobs, strict=False)))
    assert ShareKeys.from_bytes(message.to_bytes()) == message


def test_sizes_are_compact() -> None:
    advertise, *_ = examples()
    assert len(advertise.to_bytes()) == 5 + 8 + 5 + 64
    masked = MaskedInput(TAG, "dev0", 32, np.zeros(1000, dtype=np.uint32))
    assert len(masked.to_bytes()) == 5 + 8 + 5 + 1 + 4 + 4000


@pytest.mark.parametrize("message", examples(), ids=lambda m: type(m).__name__)
def test_truncated_and_padded_payloads_are_refused(message: Message) -> None:
    data = message.to_bytes()
    with pytest.raises(SecAggError, match="truncated"):
        type(message).from_bytes(data[:-1])
    with pytest.raises(SecAggError, match="1 trailing bytes"):
        type(message).from_bytes(data + b"\x00")


def test_headers_are_checked() -> None:
    data = examples()[0].to_bytes()
    with pytest.raises(SecAggError, match="not a secure-aggregation message"):
        AdvertiseKeys.from_bytes(b"XYZ" + data[3:])
    with pytest.raises(SecAggError, match="unsupported message version 2; expected 1"):
        AdvertiseKeys.from_bytes(data[:3] + b"\x02" + data[4:])
    with pytest.raises(SecAggError, match=r"expected a ShareKeys \(round 1\) message, got AdvertiseKeys \(round 0\)"):
        ShareKeys.from_bytes(data)
    with pytest.raises(SecAggError, match="unknown message kind 9"):
        decode_message(data[:4] + b"\x09" + data[5:])
    with pytest.raises(SecAggError, match="not a secure-aggregation message"):
        decode_message(b"")


def test_malformed_fields_are_refused() -> None:
    roster = examples()[1].to_bytes()
    huge_count = roster[:13] + (10**6).to_bytes(4, "big") + roster[17:]
    with pytest.raises(SecAggError, match="list of 1000000 entries"):
        Roster.from_bytes(huge_count)
    advertise = examples()[0].to_bytes()
    with pytest.raises(SecAggError, match="an id is not UTF-8"):
        AdvertiseKeys.from_bytes(advertise[:14] + b"\xff" + advertise[15:])
    masked = examples()[4].to_bytes()
    with pytest.raises(SecAggError, match="malformed MaskedInput: ring size must be one of"):
        MaskedInput.from_bytes(masked[:18] + b"\x10" + masked[19:])
