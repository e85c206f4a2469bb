"""Availability traces: CSV files of `round,device_id,online` rows saying which devices were offline when."""

from __future__ import annotations

import csv
from collections.abc import Collection
from pathlib import Path

from fleettune.errors import FleetError

HEADER = ["round", "device_id", "online"]


def read_trace(path: Path, device_ids: Collection[str]) -> dict[str, frozenset[int]]:
    """The rounds each device is offline. Rows are `round,device_id,online` with rounds counted from 1
    and `online` 0 or 1; a header row is optional, blank lines are skipped, and rounds a device has no
    row for count as online. Every device named must be one of `device_ids`."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FleetError(f"availability trace {path} does not exist") from None
    except OSError as exc:
        raise FleetError(f"availability trace {path} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise FleetError(
            f"availability trace {path} is not UTF-8 text (byte {exc.start}); expected a CSV file"
        ) from None
    offline: dict[str, set[int]] = {}
    seen: set[tuple[str, int]] = set()
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells) or (number == 1 and cells == HEADER):
            continue
        where = f"availability trace {path} line {number}"
        if len(cells) != 3:
            raise FleetError(f"{where}: expected round,device_id,online, got {','.join(row)!r}")
        round_text, device, online = cells
        if not (round_text.isascii() and round_text.isdigit()) or int(round_text) < 1:
            raise FleetError(f"{where}: round must be an integer >= 1, got {round_text!r}")
        if online not in ("0", "1"):
            raise FleetError(f"{where}: online must be 0 or 1, got {online!r}")
        if device not in device_ids:
            raise FleetError(f"{where}: device {device!r} is not in the fleet")
        key = (device, int(round_text))
        if key in seen:
            raise FleetError(f"{where}: round {key[1]} of device {device!r} is listed twice")
        seen.add(key)
        if online == "0":
            offline.setdefault(device, set()).add(key[1])
    return {device: frozenset(rounds) for device, rounds in offline.items()}
