"""Privacy accounting for repeated runs of the sampled Gaussian mechanism, using Opacus's accountants.

The mechanism accounted for: at every step each record (a training sample for DP-SGD, a client for DP-FedAvg)
joins independently with probability `sample_rate` (Poisson sampling), each contribution is clipped to L2 norm
C, and Gaussian noise of standard deviation `noise_multiplier` * C is added to their sum. Neighbouring datasets
differ by adding or removing one record (Opacus's adjacency), so the sensitivity of the sum is C. The result is
the epsilon of an (epsilon, delta)-DP guarantee after `steps` such steps.

Two accountants are offered: "rdp" (Renyi DP, a safe and fast upper bound) and "prv" (numerical composition of
privacy loss distributions, tighter, a little slower). RDP is evaluated at Opacus's default orders, so the
reported epsilon is exactly what Opacus's own accountant reports for the same parameters. Opacus is imported
on first use, so the mechanisms themselves work without it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from fleettune.errors import ConfigError
from fleettune.privacy.params import (
    check_accounted_noise,
    check_delta,
    check_sample_rate,
    check_steps,
    check_target_epsilon,
)

MECHANISMS = ("rdp", "prv")
EXTRA_RDP_ORDERS: list[float] = []  # none: epsilons are exactly those of Opacus's RDP accountant
CALIBRATION_TOLERANCE = 0.01
"""calibrate_noise returns a sigma whose epsilon lies within this much below the target."""


def rdp_orders() -> list[float]:
    """The Renyi orders the "rdp" accountant minimises over: Opacus's defaults and EXTRA_RDP_ORDERS."""
    _require_opacus()
    from opacus.accountants import RDPAccountant

    return [float(a) for a in RDPAccountant.DEFAULT_ALPHAS] + EXTRA_RDP_ORDERS


def epsilon_for(noise_multiplier: float, sample_rate: float, steps: int, delta: float, mechanism: str = "rdp") -> float:
    """The epsilon spent by `steps` runs of the sampled Gaussian mechanism at (noise_multiplier, sample_rate).

    Zero steps release nothing and spend nothing.
    """
    check_accounted_noise(noise_multiplier)
    check_sample_rate(sample_rate)
    check_steps(steps)
    check_delta(delta)
    _check_mechanism(mechanism)
    if steps == 0:
        return 0.0
    accountant = _accountant(mechanism)
    # One (sigma, q, steps) entry is exactly what Opacus's step() builds after `steps` equal steps.
    accountant.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    with _quiet():
        return float(accountant.get_epsilon(delta=delta, **_epsilon_options(mechanism)))


def calibrate_noise(
    target_epsilon: float, sample_rate: float, steps: int, delta: float, mechanism: str = "rdp"
) -> float:
    """The noise multiplier for which `steps` steps spend at most `target_epsilon` (and at most
    CALIBRATION_TOLERANCE less), found by Opacus's get_noise_multiplier with the same accountant settings
    as epsilon_for, so epsilon_for(calibrate_noise(eps, ...), ...) <= eps."""
    check_target_epsilon(target_epsilon)
    check_sample_rate(sample_rate)
    check_steps(steps, minimum=1)
    check_delta(delta)
    _check_mechanism(mechanism)
    _require_opacus()
    from opacus.accountants.utils import get_noise_multiplier

    try:
        with _quiet():
            sigma = get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=mechanism,
                epsilon_tolerance=CALIBRATION_TOLERANCE,
                **_epsilon_options(mechanism),
            )
    except ValueError as error:  # Opacus: "The privacy budget is too low." past sigma = 1e6
        raise ConfigError(
            f"no noise multiplier up to 1e6 reaches epsilon {target_epsilon} at delta {delta} "
            f"over {steps} steps at sample rate {sample_rate} ({error})"
        ) from None
    return float(sigma)


class PrivacyAccountant:
    """The privacy spent so far by one run at a fixed noise multiplier and sample rate.

    Call `step(n)` after every n mechanism steps (for example once per round); `history` lists
    (steps so far, epsilon) after each call, for reports. Epsilons are computed when first asked for and cached.
    """

    def __init__(self, *, noise_multiplier: float, sample_rate: float, delta: float, mechanism: str = "rdp") -> None:
        check_accounted_noise(noise_multiplier)
        check_sample_rate(sample_rate)
        check_delta(delta)
        _check_mechanism(mechanism)
        self.noise_multiplier = float(noise_multiplier)
        self.sample_rate = float(sample_rate)
        self.delta = float(delta)
        self.mechanism = mechanism
        self._steps = 0
        self._checkpoints: list[int] = []
        self._cache: dict[int, float] = {}

    @property
    def steps(self) -> int:
        """Mechanism steps taken so far."""
        return self._steps

    def step(self, n: int = 1) -> None:
        """Record n more steps of the mechanism (n >= 1)."""
        check_steps(n, minimum=1)
        self._steps += int(n)
        self._checkpoints.append(self._steps)

    def epsilon(self) -> float:
        """The epsilon spent after all steps so far, at this accountant's delta."""
        return self._epsilon_at(self._steps)

    @property
    def history(self) -> list[tuple[int, float]]:
        """(steps so far, epsilon) after each call of `step`, oldest first."""
        return [(steps, self._epsilon_at(steps)) for steps in self._checkpoints]

    def _epsilon_at(self, steps: int) -> float:
        if steps not in self._cache:
            self._cache[steps] = epsilon_for(self.noise_multiplier, self.sample_rate, steps, self.delta, self.mechanism)
        return self._cache[steps]

    def __repr__(self) -> str:
        return (
            f"PrivacyAccountant(mechanism={self.mechanism!r}, noise_multiplier={self.noise_multiplier}, "
            f"sample_rate={self.sample_rate}, delta={self.delta}, steps={self._steps})"
        )


def _check_mechanism(mechanism: str) -> None:
    if mechanism not in MECHANISMS:
        raise ConfigError(f"unknown privacy accountant {mechanism!r}; expected one of: {', '.join(MECHANISMS)}")


def _require_opacus() -> None:
    try:
        import opacus.accountants  # noqa: F401
    except ImportError:
        raise ConfigError("differential privacy accounting needs opacus: pip install opacus==1.6.0") from None


def _accountant(mechanism: str) -> Any:
    _require_opacus()
    from opacus.accountants import PRVAccountant, RDPAccountant

    return RDPAccountant() if mechanism == "rdp" else PRVAccountant()


def _epsilon_options(mechanism: str) -> dict[str, Any]:
    return {"alphas": rdp_orders()} if mechanism == "rdp" else {}


@contextmanager
def _quiet() -> Iterator[None]:
    """Silences Opacus's numerical chatter: the hint that the best Renyi order is an extreme one (the bound
    stays valid, only less tight) and numpy's log(0) in the PRV density at sample_rate 1 (masked by a where)."""
    with warnings.catch_warnings(), np.errstate(divide="ignore"):
        warnings.filterwarnings("ignore", message="Optimal order is the", category=UserWarning)
        yield
