"""Trying a deployment on one machine: per-device data folders from a run's own partition, a run's
flags as a config file, a free loopback port.

Each client's training share is written to `<root>/<device id>/train.jsonl` in the order the simulation
holds it, so a device that joins with that folder trains on exactly what the simulated client did.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from fleettune.runner import PreparedRun


def write_device_folders(prepared: PreparedRun, root: Path) -> dict[str, Path]:
    names = prepared.dataset.label_names
    folders = {}
    for client in prepared.setup.clients:
        folder = root / client.id
        folder.mkdir(parents=True, exist_ok=True)
        rows = [
            json.dumps({"text": text, "label": names[label]})
            for text, label in zip(client.train.texts, client.train.labels, strict=True)
        ]
        (folder / "train.jsonl").write_text("\n".join(rows) + "\n")
        folders[client.id] = folder
    return folders


def write_config(flags: dict[str, Any], path: Path) -> Path:
    """Flags with dotted keys (`lora.rank`) as a TOML config file for `serve --config`."""
    tables: dict[str, dict[str, Any]] = {"": {}}
    for key, value in flags.items():
        table, _, name = key.rpartition(".")
        tables.setdefault(table, {})[name] = value
    lines = []
    for table, values in sorted(tables.items()):
        if table:
            lines.append(f"[{table}]")
        lines += [f"{name} = {json.dumps(value)}" for name, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (another process may take it before it is used)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
