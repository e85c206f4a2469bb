"""The one error a protocol violation raises: a bad, forged, out-of-order or inconsistent message."""

from __future__ import annotations

from fleettune.errors import FleettuneError


class SecAggError(FleettuneError, ValueError):
    """A secure-aggregation message or step was refused; the message says what was wrong and what was expected."""
