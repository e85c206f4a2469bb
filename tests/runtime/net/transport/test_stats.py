"""WireStats: per-device counters that stay exact under concurrent updates."""

from __future__ import annotations

import threading

from fleettune.runtime.net.transport import WireStats


def test_concurrent_updates_add_up_and_snapshots_are_copies() -> None:
    stats = WireStats()

    def work(device: str) -> None:
        for _ in range(2000):
            stats.add_sent(device, 10, 7)
            stats.add_received(device, 5, 3)

    threads = [threading.Thread(target=work, args=(f"d{i % 2}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snapshot = stats.snapshot()
    assert snapshot.sent == {"d0": 40_000, "d1": 40_000} and snapshot.payload_received == {"d0": 12_000, "d1": 12_000}
    assert stats.totals() == {"sent": 80_000, "received": 40_000, "payload_sent": 56_000, "payload_received": 24_000}
    stats.add_sent("d0", 1, 1)
    assert snapshot.sent["d0"] == 40_000
