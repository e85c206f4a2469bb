"""Ending a run early at a round boundary, on request (the first Ctrl-C), so the rounds done are kept."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType


class StopRequest:
    """Set once to ask a run to end after the round in progress; schemes read it when they close a round.

    The run then evaluates that round, as it evaluates its last planned one, and returns its result."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def request(self) -> None:
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()


@contextmanager
def stop_on_interrupt(stop: StopRequest, notice: Callable[[], None]) -> Iterator[None]:
    """While inside: the first SIGINT requests `stop` and calls `notice`; a second one raises
    KeyboardInterrupt as usual (abandoning the run). Outside the main thread signals cannot be caught, so
    there it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        if stop.requested:
            raise KeyboardInterrupt
        stop.request()
        notice()

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
