"""Real server and device processes on 127.0.0.1 for deployment tests: config files, ports, launching."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fleettune.runtime.net.trial import free_port, write_config

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
