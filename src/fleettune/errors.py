"""The one exception tree of fleettune: user mistakes vs. internal failures."""

from __future__ import annotations

from typing import Any


class FleettuneError(Exception):
    """Base of every error fleettune raises on purpose."""

    exit_code = 1


class InputError(FleettuneError):
    """Bad input from the user: config, flags, data, model, fleet. The CLI exits 2 with one line."""

    exit_code = 2


class ConfigError(InputError):
    """A configuration value is missing, unknown or out of range."""


class DataError(InputError):
    """A data file, column, split, label or client partition is unusable."""


class ModelError(InputError):
    """A model cannot be found, installed, loaded or split as asked."""


class FleetError(InputError):
    """A fleet file or device profile is unusable."""


class RegistryError(InputError):
    """A name was looked up in a registry that does not hold it."""


class RunInterrupted(FleettuneError):
    """A run was asked to stop (Ctrl-C) and ended after the round in progress; its report covers the rounds it
    ran. The CLI exits 130, as for SIGINT, after writing that report."""

    exit_code = 130

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report
