"""The replay guard on its own: ordering per device, exact retries, and a retry waiting for the first copy."""

from __future__ import annotations

import threading

import grpc
import pytest

from fleettune.runtime.net.transport.errors import ProtocolError
from fleettune.runtime.net.transport.replay import Outcome, ReplayGuard


def test_new_then_retry_then_stale_then_changed() -> None:
    guard = ReplayGuard()
    slot, new = guard.admit("d1", 5, b"a")
    assert new
    again, new = guard.admit("d1", 5, b"a")
    assert again is slot and not new
    for seq, digest, why in ((4, b"a", "below the last one"), (5, b"b", "different content")):
        with pytest.raises(ProtocolError, match=f"replayed or out-of-order message from d1: seq {seq} .*{why}") as c:
            guard.admit("d1", seq, digest)
        assert c.value.code is grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(ProtocolError, match="last accepted seq 5"):
        guard.precheck("d1", 4)
    guard.precheck("d1", 5)
    guard.precheck("d2", 1)
    assert guard.admit("d1", 6, b"a")[1] and guard.admit("d2", 1, b"a")[1]


def test_a_retry_waits_for_the_outcome_of_the_first_copy() -> None:
    guard = ReplayGuard()
    slot, _ = guard.admit("d1", 1, b"x")
    retry, new = guard.admit("d1", 1, b"x")
    assert not new
    got: list[Outcome | None] = []
    waiter = threading.Thread(target=lambda: got.append(retry.wait()))
    waiter.start()
    waiter.join(0.1)
    assert waiter.is_alive() and not got
    slot.finish(Outcome(code=grpc.StatusCode.INVALID_ARGUMENT, details="bad"))
    waiter.join(5)
    assert got[0] is not None and got[0].details == "bad"
    assert slot.wait(0) is got[0]
