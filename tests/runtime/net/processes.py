"""Real server and device processes on 127.0.0.1 for deployment tests: config files, ports, launching."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleettune.config import build_config
from fleettune.runner import prepare
from fleettune.runtime.net.trial import free_port, write_config, write_device_folders

__all__ = ["free_port", "write_config"]

import pytest


def write_tokens(devices: list[str], path: Path) -> dict[str, str]:
    tokens = {d: f"token-of-{d}-0123456789abcdef" for d in devices}
    path.write_text("".join(f"{d} {t}\n" for d, t in tokens.items()))
    return tokens


def launch(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    handle = open(log, "wb")  # noqa: SIM115 - the process writes to it until it ends
    return subprocess.Popen([sys.executable, "-m", "fleettune.cli.main", *args], stdout=handle, stderr=handle, env=env)


def serve_args(config: Path, port: int, out: Path, *extra: str) -> list[str]:
    return [
        "serve",
        "--config",
        str(config),
        "--listen",
        f"127.0.0.1:{port}",
        "--out",
        str(out),
        "--poll",
        "0.2",
        *extra,
    ]


def join_args(port: int, device: str, data_dir: Path, token: str, *extra: str) -> list[str]:
    return [
        "join",
        "--server",
        f"127.0.0.1:{port}",
        "--device-id",
        device,
        "--data-dir",
        str(data_dir),
        "--token",
        token,
        *extra,
    ]


def rounds_logged(log: Path) -> int:
    """The last round a server's log reports ("round N: ..." lines; 0 before the first)."""
    found = re.findall(r"^round (\d+):", log.read_text(errors="replace"), flags=re.MULTILINE)
    return max((int(n) for n in found), default=0)


@dataclass(frozen=True)
class Fleet:
    """A run's files written for a server and its devices to be launched (token authenticated, checkpointing) by a
    test that stops and starts them itself."""

    root: Path
    config: Path
    folders: dict[str, Path]
    tokens: dict[str, str]
    port: int
    out: Path
    checkpoints: Path

    @classmethod
    def write(cls, flags: dict[str, Any], root: Path) -> Fleet:
        folders = write_device_folders(prepare(build_config(flags=flags)), root / "devices")
        config = write_config(flags, root / "run.toml")
        tokens = write_tokens(list(folders), root / "tokens.txt")
        return cls(root, config, folders, tokens, free_port(), root / "out", root / "checkpoints")

    def serve(self, log: Path, *extra: str) -> subprocess.Popen[bytes]:
        tokens = ("--tokens", str(self.root / "tokens.txt"), "--checkpoint-dir", str(self.checkpoints))
        return launch(serve_args(self.config, self.port, self.out, *tokens, *extra), log)

    def join(self, device: str, log: Path) -> subprocess.Popen[bytes]:
        return launch(join_args(self.port, device, self.folders[device], self.tokens[device]), log)


def wait_for(predicate: Any, timeout_s: float, what: str, logs: list[Path]) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs if p.exists())
    pytest.fail(f"timed out waiting for {what}\n{tails}")


def finish(process: subprocess.Popen[bytes], timeout_s: float, log: Path) -> int:
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"{log.name} did not finish within {timeout_s} s:\n{log.read_text(errors='replace')[-3000:]}")


def kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
        process.wait()


def run_deployed(
    flags: dict[str, Any], folders: dict[str, Path], root: Path, meanwhile: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Serve `flags` from a server process with one process per device (token authenticated) and return the
    report; `meanwhile(port)` runs once the devices are launched. Every process must exit 0."""
    config = write_config(flags, root / "run.toml")
    tokens = write_tokens(list(folders), root / "tokens.txt")
    port, out = free_port(), root / "out"
    logs = [root / "server.log", *(root / f"{d}.log" for d in folders)]
    server = launch(serve_args(config, port, out, "--tokens", str(root / "tokens.txt")), logs[0])
    devices = []
    try:
        for (device, folder), log in zip(folders.items(), logs[1:], strict=True):
            devices.append(launch(join_args(port, device, folder, tokens[device]), log))
        if meanwhile is not None:
            meanwhile(port)
        for process, log in zip(devices, logs[1:], strict=True):
            assert finish(process, 240, log) == 0, log.read_text()[-2000:]
        assert finish(server, 60, logs[0]) == 0, logs[0].read_text()[-2000:]
    finally:
        for process in [server, *devices]:
            kill(process)
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report
