"""Checks on the user-facing privacy parameters, each failing with a one-line ConfigError."""

from __future__ import annotations

import math
import numbers

from fleettune.errors import ConfigError


def check_clip(clip: float) -> None:
    """The clipping bound C must be a finite positive number."""
    if not (_is_real(clip) and math.isfinite(clip) and clip > 0):
        raise ConfigError(f"clip (the L2 clipping bound) must be a finite number > 0, got {clip!r}")


def check_noise(noise_multiplier: float) -> None:
    """A mechanism's noise multiplier sigma may be zero (clipping only, no privacy) but not negative."""
    if not (_is_real(noise_multiplier) and math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ConfigError(f"noise_multiplier must be a finite number >= 0, got {noise_multiplier!r}")


def check_accounted_noise(noise_multiplier: float) -> None:
    """Accounting needs sigma > 0: without noise the privacy loss is unbounded."""
    if not (_is_real(noise_multiplier) and math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ConfigError(f"noise_multiplier must be a finite number > 0 to account privacy, got {noise_multiplier!r}")


def check_sample_rate(sample_rate: float) -> None:
    """The sampling probability q of one record (or client) per step, in (0, 1]."""
    if not (_is_real(sample_rate) and 0 < sample_rate <= 1):
        raise ConfigError(f"sample_rate must be in (0, 1], got {sample_rate!r}")


def check_delta(delta: float) -> None:
    """delta must lie strictly between 0 and 1 (typically well below 1 / dataset size)."""
    if not (_is_real(delta) and 0 < delta < 1):
        raise ConfigError(f"delta must be in (0, 1), got {delta!r}")


def check_steps(steps: int, *, minimum: int = 0) -> None:
    """A whole number of mechanism runs, at least `minimum`."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < minimum:
        raise ConfigError(f"steps must be an integer >= {minimum}, got {steps!r}")


def check_target_epsilon(target_epsilon: float) -> None:
    """A privacy budget epsilon must be a finite positive number."""
    if not (_is_real(target_epsilon) and math.isfinite(target_epsilon) and target_epsilon > 0):
        raise ConfigError(f"target_epsilon must be a finite number > 0, got {target_epsilon!r}")


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
