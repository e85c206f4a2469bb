"""TON_IoT telemetry: one ``Train_Test_IoT_<Device>.csv`` per device kind, rows rendered as text."""

from __future__ import annotations

from pathlib import Path

from fleettune.data.labels import vocabulary
from fleettune.data.sampling import hold_out
from fleettune.data.sources.registry import SOURCES, require_dir
from fleettune.data.sources.text_files import Table, read_table
from fleettune.data.types import Split, TextDataset
from fleettune.errors import DataError

PATTERN = "Train_Test_IoT_*.csv"
EXPECTED = f"the TON_IoT device files {PATTERN} (Fridge, GPS_Tracker, Garage_Door, Modbus, ...)"
# Attack types in the order the TON_IoT papers list them, normal first.
TYPES = ("normal", "ddos", "backdoor", "injection", "password", "ransomware", "xss", "scanning")
# Timestamps identify a capture session, not a behaviour; label and type are the answer.
DROPPED = ("date", "time", "label", "type")


def device_kind(path: Path) -> str:
    """``Train_Test_IoT_GPS_Tracker.csv`` -> ``gps_tracker``."""
    return path.stem.removeprefix("Train_Test_IoT_").lower()


def render_rows(table: Table, kind: str) -> list[str]:
    """``fridge: fridge_temperature=9 temp_condition=high`` per row: the device's readings only."""
    kept = [i for i, name in enumerate(table.header) if name.lower() not in DROPPED]
    names = [table.header[i] for i in kept]
    return [
        f"{kind}: " + " ".join(f"{name}={row[i]}" for name, i in zip(names, kept, strict=True)) for row in table.rows
    ]


@SOURCES.register("ton-iot")
def load_ton_iot(
    data_dir: Path | None, *, text_column: str = "text", label_column: str = "label", seed: int = 0
) -> TextDataset:
    """Every device file of ``data_dir``; label = attack ``type``; group = device kind; 20% held out.

    The column arguments do not apply: the rendered text and the ``type`` column are fixed.
    """
    folder = require_dir(data_dir, "ton-iot", EXPECTED)
    files = sorted(folder.glob(PATTERN))
    if not files:
        raise DataError(f"data directory {folder} for dataset ton-iot has no {PATTERN}; expected {EXPECTED}")
    texts: list[str] = []
    types: list[str] = []
    groups: list[str] = []
    for path in files:
        table = read_table(path)
        type_at = table.column("type")
        kind = device_kind(path)
        for row, line in zip(table.rows, table.lines, strict=True):
            if not row[type_at]:
                raise DataError(f"{path} line {line}: empty value in column 'type'")
        texts.extend(render_rows(table, kind))
        types.extend(row[type_at].lower() for row in table.rows)
        groups.extend([kind] * len(table.rows))
    labels = vocabulary(types, TYPES)
    everything = Split(texts, labels.encode(types, folder), groups)
    train, test = hold_out(everything, seed)
    return TextDataset("ton-iot", labels.names, train, test)
