"""Calling the command line in-process: its exit code and what it wrote to stderr."""

from __future__ import annotations

import pytest

from fleettune.cli.main import main


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err
