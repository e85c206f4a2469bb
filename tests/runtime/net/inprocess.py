"""Deployed runs with every device a thread of the test process, talking to the coordinator's handler directly."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from fleettune.config import build_config
from fleettune.runner import prepare
from fleettune.runtime.net.coordinator import Coordinator, ServeOptions
from fleettune.runtime.net.device import DeviceAgent
from fleettune.runtime.net.driver import drive
from fleettune.runtime.net.local import LocalCaller
from fleettune.runtime.net.trial import write_device_folders
from fleettune.schemes import SchemeResult

FAST = ServeOptions(poll_s=0.2, join_timeout_s=60.0, step_timeout_s=60.0)


class Vanish(Exception):
    """A test device's way of leaving: its thread ends quietly."""


def deploy(
    flags: dict[str, Any],
    root: Path,
    odd: type[DeviceAgent] = DeviceAgent,
    options: ServeOptions = FAST,
    at: int = 0,
) -> SchemeResult:
    """The deployed run of `flags`, its device number `at` an instance of `odd`; any device error but `Vanish`
    fails the test."""
    prepared = prepare(build_config(flags=flags))
    folders = write_device_folders(prepared, root)
    coordinator = Coordinator(prepared, options)
    errors: list[BaseException] = []

    def run(device: str, folder: Path) -> None:
        kind = odd if device == list(folders)[at] else DeviceAgent
        try:
            kind(device, LocalCaller(coordinator.handle, device), folder).run()
        except Vanish:
            pass
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=item, daemon=True) for item in folders.items()]
    for t in threads:
        t.start()
    result = drive(coordinator)
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    return result
