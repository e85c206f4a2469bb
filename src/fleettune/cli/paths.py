"""Output paths checked before a command spends time training or planning."""

from __future__ import annotations

import os
from pathlib import Path

from fleettune.errors import ConfigError


def check_output_dir(out: Path, flag: str = "--out") -> None:
    """Refuse, with one line, a path that cannot become a writable folder, before anything trains or plans
    (creates nothing)."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{flag} {out}: {existing} is a file; expected a directory (new or existing)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {out}: {existing} is not writable; expected a directory you can write to")
