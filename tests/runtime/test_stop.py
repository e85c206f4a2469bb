"""The stop request: the first SIGINT asks for a stop, the second aborts, and the old handler comes back."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from fleettune.runtime.stop import StopRequest, stop_on_interrupt


def test_first_sigint_requests_a_stop_and_the_second_aborts() -> None:
    stop = StopRequest()
    notices: list[str] = []
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), stop_on_interrupt(stop, lambda: notices.append("stopping")):
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and notices == ["stopping"]
        os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_without_a_signal_nothing_is_requested() -> None:
    stop = StopRequest()
    with stop_on_interrupt(stop, lambda: None):
        pass
    assert not stop.requested
    stop.request()
    assert stop.requested


def test_outside_the_main_thread_it_leaves_signals_alone() -> None:
    before = signal.getsignal(signal.SIGINT)
    seen: list[object] = []

    def worker() -> None:
        with stop_on_interrupt(StopRequest(), lambda: None):
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [before]
