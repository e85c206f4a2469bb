"""`fleettune partition`: each device's share of a run's training data, written to a folder of its own."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fleettune.cli.paths import check_output_dir
from fleettune.config import build_config
from fleettune.runner import prepare
from fleettune.runtime.net.trial import write_device_folders

Opt = typer.Option


def partition(
    out: Annotated[Path, Opt("--out", help="Directory to write <device-id>/train.jsonl into.")],
    config: Annotated[Path | None, Opt("--config", help="A TOML run config.")] = None,
    overrides: Annotated[list[str] | None, Opt("--set", help="key=value config override (repeatable).")] = None,
) -> None:
    """Split a run's training data among its fleet's devices (as `run` would) into one folder per device:
    the `--data-dir` of each `fleettune join` when a deployment is tried on data you hold in one place."""
    check_output_dir(out)
    prepared = prepare(build_config(config, {}, overrides))
    folders = write_device_folders(prepared, out)
    console = Console()
    for device, folder in folders.items():
        rows = sum(1 for _ in (folder / "train.jsonl").open())
        console.print(f"{device}: {rows} rows in {folder}")
